"""Training side of cnn-serve: reference CNNs, dataset readers, training and SavedModel export."""
