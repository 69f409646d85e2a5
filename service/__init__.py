"""cnn-serve: REST inference for image CNNs, with every layer's feature maps on request."""

__version__ = "0.1.0"
