"""cnn-serve: REST inference for image CNNs, with every layer's feature maps on request."""
