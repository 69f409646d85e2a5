"""Train -> export -> reload -> predict, end to end through the CLI on tiny synthetic data."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.cli import main
from training.export import feature_map_model
from training.metadata import ModelMetadata

from .digits import bar_digits_npz


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    return bar_digits_npz(tmp_path_factory.mktemp("data") / "mnist.npz", 120, noise_seed=1)


@pytest.fixture(scope="module")
def exported(tiny_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    args = [
        "digit_odd",
        "--data",
        str(tiny_mnist),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert main(args) == 0  # a second run is the next version
    return out


def test_versions_follow_tf_serving_layout(exported):
    versions = sorted(p.name for p in (exported / "digit_odd").iterdir())
    assert versions == ["1", "2"]
    for v in versions:
        assert (exported / "digit_odd" / v / "saved_model.pb").is_file()
        assert (exported / "digit_odd" / v).stat().st_mode & 0o005 == 0o005  # others can read
        assert (exported / "digit_odd" / v / "metadata.json").is_file()


def test_metadata_is_complete(exported):
    meta = ModelMetadata.read(exported / "digit_odd" / "2")
    assert meta.version == 2 and meta.name == "digit_odd"
    assert meta.total_params == 63_035 and meta.trainable_params == 63_035
    assert meta.input.shape == [28, 28, 1] and meta.input.preprocessing == "mnist"
    assert [(o.name, o.kind) for o in meta.outputs] == [("digit", "multiclass"), ("odd", "binary")]
    assert meta.outputs[1].labels == ["even", "odd"]
    assert {"digit_accuracy", "odd_accuracy", "loss"} <= set(meta.validation_metrics)
    assert meta.dataset.train_examples == 108 and meta.dataset.validation_examples == 12
    assert meta.dataset.format == "npz" and meta.training.epochs == 2
    assert sum(layer.params for layer in meta.layers) == meta.total_params
    raw = json.loads((exported / "digit_odd" / "2" / "metadata.json").read_text())
    assert raw["created_at"] and raw["tensorflow_version"] == tf.__version__


def test_reloaded_savedmodel_predicts_like_keras(exported):
    path = exported / "digit_odd" / "1"
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "feature_maps"}
    model = keras.models.load_model(path / "model.keras")
    x = np.random.default_rng(2).random((5, 28, 28, 1), np.float32)
    served = loaded.signatures["serving_default"](image=tf.constant(x))
    expected = model(x)
    assert set(served) == {"digit", "odd"}
    np.testing.assert_allclose(served["digit"], expected["digit"], atol=1e-5)
    np.testing.assert_allclose(served["odd"], expected["odd"], atol=1e-5)
    np.testing.assert_allclose(served["digit"].numpy().sum(axis=1), 1.0, atol=1e-5)
    maps = loaded.signatures["feature_maps"](image=tf.constant(x))
    assert maps["concat_layer"].shape == (5, 6192)
    for name, value in feature_map_model(model)(x).items():
        np.testing.assert_allclose(maps[name], value, atol=1e-5)


def test_transfer_model_trains_and_exports(exported, tiny_mnist):
    assert (
        main(
            [
                "digit_only",
                "--data",
                str(tiny_mnist),
                "--epochs",
                "1",
                "--batch-size",
                "32",
                "--out",
                str(exported),
                "--base-dir",
                str(exported),
            ]
        )
        == 0
    )
    meta = ModelMetadata.read(exported / "digit_only" / "1")
    assert meta.training.base_model == "digit_odd" and meta.training.frozen_up_to == "flatten_layer"
    assert meta.trainable_params == 5408 * 10 + 10
    assert [o.name for o in meta.outputs] == ["digit"]
    base = keras.models.load_model(exported / "digit_odd" / "2" / "model.keras")
    child = keras.models.load_model(exported / "digit_only" / "1" / "model.keras")
    np.testing.assert_array_equal(
        base.get_layer("conv2d_layer").get_weights()[0],
        child.get_layer("conv2d_layer").get_weights()[0],
    )


def test_transfer_without_base_is_a_clear_error(tiny_mnist, tmp_path):
    with pytest.raises(SystemExit, match="no trained 'digit_odd'"):
        main(
            [
                "digit_only",
                "--data",
                str(tiny_mnist),
                "--out",
                str(tmp_path),
                "--base-dir",
                str(tmp_path),
            ]
        )


def test_bad_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="mnist.npz: not a readable .npz"):
        (tmp_path / "mnist.npz").write_bytes(b"junk")
        main(["digit_odd", "--data", str(tmp_path / "mnist.npz"), "--out", str(tmp_path)])
