"""An interrupted training run continues from its last checkpoint (``--resume``), a new run
starts from an exported version (``--init-from``), and the residual network's cosine schedule
trains."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training import train
from training.architectures import get_architecture
from training.cli import main
from training.datasets import Dataset
from training.metadata import ModelMetadata

from .digits import bar_digits, bar_digits_npz


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted after the second epoch")


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    arch = get_architecture("simple_cnn")
    cfg = train.TrainConfig(
        epochs=4, batch_size=20, resume=str(tmp_path / "ckpt"), verbose=0, patience=10
    )
    original = train._optimizer_and_callbacks

    def interrupted(cfg, steps):
        optimizer, callbacks = original(cfg, steps)
        return optimizer, [*callbacks, Interrupt()]  # after the checkpoint of each epoch

    monkeypatch.setattr(train, "_optimizer_and_callbacks", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        train.fit(arch.build, arch.outputs, arch.input, bar_digits(), cfg)
    assert any((tmp_path / "ckpt").rglob("*")), "no checkpoint written"
    monkeypatch.undo()
    result = train.fit(arch.build, arch.outputs, arch.input, bar_digits(), cfg)
    assert result.epochs_run == 2  # epochs 3 and 4: the first two were not run again
    assert not any((tmp_path / "ckpt").rglob("*.weights.h5"))  # a finished run cleans up


def test_cosine_schedule_trains_the_resnet_a_step():
    arch = get_architecture("cifar10_resnet")
    assert arch.schedule == "cosine"
    rng = np.random.default_rng(0)
    data = Dataset(
        "cifar10",
        rng.integers(0, 256, (40, 32, 32, 3), np.uint8),
        np.arange(40) % 10,
        [str(c) for c in range(10)],
        "npz",
        None,
        "test",
    )
    cfg = train.TrainConfig(
        epochs=1, batch_size=20, schedule="cosine", learning_rate=0.1, verbose=0
    )
    result = train.fit(arch.build, arch.outputs, arch.input, data, cfg)
    assert isinstance(result.model.optimizer, keras.optimizers.SGD)
    assert set(result.validation_metrics) >= {"accuracy", "loss"}


def _weights(version_dir) -> list[np.ndarray]:
    return keras.models.load_model(version_dir / "model.keras", compile=False).get_weights()


def test_init_from_starts_where_an_exported_version_ended(tmp_path):
    """--init-from: a further run begins with that version's weights (a learning rate too
    small to move them keeps them), records where it started, and refuses another
    architecture's version."""
    bar_digits_npz(tmp_path / "mnist.npz")
    common = [
        "--data",
        str(tmp_path / "mnist.npz"),
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--out",
        str(tmp_path / "models"),
    ]
    models = tmp_path / "models" / "simple_cnn"
    assert main(["simple_cnn", *common]) == 0
    assert main(["simple_cnn", *common, "--lr", "1e-12", "--init-from", str(models / "1")]) == 0
    assert main(["simple_cnn", *common, "--lr", "1e-12"]) == 0  # the same, from scratch
    first, warm, cold = (_weights(models / v) for v in ("1", "2", "3"))
    for a, b in zip(first, warm, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(not np.allclose(a, c, atol=1e-6) for a, c in zip(first, cold, strict=True))
    assert ModelMetadata.read(models / "2").training.initialized_from == "simple_cnn/1"
    assert ModelMetadata.read(models / "3").training.initialized_from is None
    with pytest.raises(SystemExit, match="not this architecture"):
        main(["mnist_cnn", *common, "--init-from", str(models / "1")])
