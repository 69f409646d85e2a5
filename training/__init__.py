"""Training side of cnn-serve: reference CNNs, dataset readers, training and SavedModel export."""

# first, before any module imports TensorFlow or Keras: their start-up notices are captured
from training import quiet_tf as _quiet_tf  # noqa: F401
