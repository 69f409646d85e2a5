"""Stochastic weight averaging (Izmailov et al., 2018, "Averaging Weights Leads to Wider Optima
and Better Generalization"): train on at a constant learning rate, keep the mean of the weights
at every epoch's end, and export that mean. The mean lies nearer the centre of the flat region
the weights wander in, which generalises better than any single point on the walk.

Batch-norm moving statistics belong to the weights that produced them, so after averaging they
are computed again: one pass over the training images, each layer's statistics the plain mean
over the batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np


class WeightAveraging(keras.callbacks.Callback):
    """Running mean of ``model``'s weights at each epoch's end; :meth:`apply` sets it."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.averaged = model
        self.mean: list[np.ndarray] | None = None
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        weights = self.averaged.get_weights()
        self.epochs += 1
        if self.mean is None:
            self.mean = [np.array(w, np.float64) for w in weights]
        else:
            for mean, w in zip(self.mean, weights, strict=True):
                mean += (w - mean) / self.epochs

    def apply(self) -> None:
        if self.mean is not None:
            self.averaged.set_weights([m.astype(np.float32) for m in self.mean])


def recompute_batch_norm(model: keras.Model, batches: Sequence) -> int:
    """Reset every BatchNormalization layer's moving mean/variance to the mean of its batch
    statistics over ``batches`` (items ``(x, y)``); returns the number of layers."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    try:
        for k in range(len(batches)):
            for layer in layers:  # new = old * m + batch * (1 - m): a running mean at m = k/(k+1)
                layer.momentum = k / (k + 1)
            model(batches[k][0], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)
