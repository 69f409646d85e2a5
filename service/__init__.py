"""cnn-serve: REST inference for image CNNs, with every layer's feature maps on request."""

# first, before any module imports TensorFlow or Keras: their start-up notices are captured
from training import quiet_tf as _quiet_tf  # noqa: F401

__version__ = "0.1.0"
