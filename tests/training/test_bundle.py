"""Train on any Keras backend into a bundle (``--bundle``), export it where TensorFlow is
(``cnn-train export``): the version serves what was trained, with its metrics recomputed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from training.cli import main
from training.metadata import ModelMetadata

from .digits import bar_digits_npz

REPO = Path(__file__).resolve().parents[2]


def _served(version_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(image=tf.constant(x)).items()}


def test_a_bundle_becomes_the_next_version_with_its_metrics_recomputed(tmp_path):
    data = bar_digits_npz(tmp_path / "mnist.npz")
    bundle, models = tmp_path / "bundle", tmp_path / "models"
    assert (
        main(
            [
                "simple_cnn",
                "--data",
                str(data),
                "--epochs",
                "2",
                "--batch-size",
                "20",
                "--bundle",
                str(bundle),
                "--out",
                str(models),
            ]
        )
        == 0
    )
    trained = ModelMetadata.read(bundle)
    assert trained.version == 0 and trained.training.backend == "tensorflow"
    assert not (bundle / "saved_model.pb").exists() and not models.exists()

    assert main(["export", str(bundle), "--data", str(data), "--out", str(models)]) == 0
    version = models / "simple_cnn" / "1"
    exported = ModelMetadata.read(version)
    assert exported.version == 1
    assert exported.training == trained.training
    assert exported.dataset.path == str(data) and exported.dataset.format == "npz"
    for name, value in trained.validation_metrics.items():
        assert exported.validation_metrics[name] == pytest.approx(value, abs=1e-4)
    x = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
    expected = keras.models.load_model(bundle / "model.keras", compile=False)(x)
    np.testing.assert_allclose(_served(version, x)["digit"], expected["digit"], atol=1e-5)


def test_export_refuses_a_dataset_it_was_not_trained_on(tmp_path):
    bundle = tmp_path / "bundle"
    assert (
        main(
            [
                "simple_cnn",
                "--data",
                str(bar_digits_npz(tmp_path / "a.npz")),
                "--epochs",
                "1",
                "--bundle",
                str(bundle),
            ]
        )
        == 0
    )
    other = bar_digits_npz(tmp_path / "b.npz", n=150)
    with pytest.raises(SystemExit, match="150 examples.*trained on 200"):
        main(["export", str(bundle), "--data", str(other), "--out", str(tmp_path / "models")])
    with pytest.raises(SystemExit, match="not a training bundle"):
        main(["export", str(tmp_path), "--out", str(tmp_path / "models")])


def _on_jax(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="JAX is in the test extras: pip install -e '.[test]'",
)
def test_the_resnet_trained_on_jax_serves_the_same_from_its_savedmodel(tmp_path):
    """The architecture code runs on Keras' JAX backend (a GPU machine without TensorFlow):
    augmentation in the model, a bundle, and an export here that answers as JAX did."""
    rng = np.random.default_rng(1)
    for i in range(40):
        folder = tmp_path / "photos" / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(folder / f"{i}.png")
    train = [
        "-m",
        "training.cli",
        "cifar10_resnet",
        "--data",
        str(tmp_path / "photos"),
        "--epochs",
        "1",
        "--batch-size",
        "12",
    ]

    refused = _on_jax(*train, cwd=tmp_path)
    assert refused.returncode != 0 and "--bundle" in refused.stderr
    run = _on_jax(*train, "--bundle", "bundle", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    x = rng.random((3, 32, 32, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    predict = _on_jax(
        "-c",
        "import json, keras, numpy as np; "
        "m = keras.models.load_model('bundle/model.keras', compile=False); "
        "print(json.dumps(np.asarray(m(np.load('x.npy'))['class']).tolist()))",
        cwd=tmp_path,
    )
    assert predict.returncode == 0, predict.stderr
    on_jax = np.asarray(json.loads(predict.stdout.strip().splitlines()[-1]))

    assert (
        main(
            [
                "export",
                str(tmp_path / "bundle"),
                "--data",
                str(tmp_path / "photos"),
                "--out",
                str(tmp_path / "models"),
            ]
        )
        == 0
    )
    version = tmp_path / "models" / "cifar10_resnet" / "1"
    meta = ModelMetadata.read(version)
    assert meta.training.backend == "jax" and meta.training.hardware.endswith("Keras on jax")
    assert meta.training.augment and [layer.name for layer in meta.layers][:2] == [
        "image",
        "stem_conv",
    ]  # the augmentation wrapper stays behind
    np.testing.assert_allclose(_served(version, x)["class"], on_jax, atol=1e-5)
