"""Stochastic weight averaging: the export is the mean of the epoch-end weights, and batch-norm
statistics are computed again for it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training import train
from training.architectures import get_architecture
from training.averaging import recompute_batch_norm
from training.cli import main

from .digits import bar_digits


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(self.model.get_weights())


def test_the_trained_model_is_the_mean_of_its_epoch_end_weights(monkeypatch):
    arch = get_architecture("simple_cnn")
    recorder = Recorder()
    original = train._optimizer_and_callbacks

    def recorded(cfg, steps):
        optimizer, callbacks = original(cfg, steps)
        assert isinstance(optimizer, keras.optimizers.SGD)  # a constant rate, not Adam
        return optimizer, [*callbacks, recorder]

    monkeypatch.setattr(train, "_optimizer_and_callbacks", recorded)
    cfg = train.TrainConfig(
        epochs=3, batch_size=20, learning_rate=0.05, average_weights=True, verbose=0
    )
    result = train.fit(arch.build, arch.outputs, arch.input, bar_digits(120), cfg)
    assert len(recorder.seen) == 3
    assert not np.allclose(recorder.seen[0][0], recorder.seen[-1][0])  # the weights moved
    for got, *per_epoch in zip(result.model.get_weights(), *recorder.seen, strict=True):
        np.testing.assert_allclose(got, np.mean(per_epoch, axis=0), rtol=1e-5, atol=1e-6)


def test_batch_norm_statistics_are_the_mean_over_the_batches():
    rng = np.random.default_rng(0)
    batches = [
        (rng.normal(loc, scale, (16, 4)).astype(np.float32), None)
        for loc, scale in [(0.0, 1.0), (2.0, 3.0), (-1.0, 0.5)]
    ]
    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(keras.layers.Dense(4, kernel_initializer="identity")(inputs)))
    assert recompute_batch_norm(model, batches) == 1
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), np.mean([x.mean(axis=0) for x, _ in batches], axis=0), rtol=1e-5
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean([x.var(axis=0) for x, _ in batches], axis=0), rtol=1e-4
    )
    assert bn.momentum == 0.99


def test_averaging_refuses_to_resume(tmp_path):
    with pytest.raises(SystemExit, match="--resume"):
        main(
            [
                "simple_cnn",
                "--data",
                str(tmp_path),
                "--average-weights",
                "--resume",
                str(tmp_path / "ckpt"),
            ]
        )
