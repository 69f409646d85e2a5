"""One-image calls through LiteRT: the answers TensorFlow gives, and TensorFlow alone where
the LiteRT copy is missing, stale or turned off."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from service import preprocess
from service.model import ServedModel
from tests.service.conftest import make_client
from tests.service.handwriting import draw_digit, encode
from training.export import LITE_FILE


def _png(digit: int) -> bytes:
    """A pen digit of the model's size: what graph_decode would take."""
    return encode(draw_digit(digit, canvas=(28, 28), box=(7, 4, 20), pen=0.12))


def _served(client) -> list[ServedModel]:
    registry = client.app.state.server.registry
    return [model for versions in registry.models.values() for model in versions.values()]


def test_every_bundled_version_answers_one_image_as_tensorflow_does(client):
    models = _served(client)
    assert models and all(model.uses_lite for model in models)
    rng = np.random.default_rng(1)
    for model in models:
        spec = model.metadata.input
        low, high = spec.value_range
        pair = rng.uniform(low, high, (2, *spec.shape)).astype(np.float32)
        alone, batched = model.predict(pair[:1]), model.predict(pair)  # LiteRT, TensorFlow
        for name, value in batched.items():
            np.testing.assert_allclose(alone[name], value[:1], atol=1e-5, err_msg=model.name)


def _copy(models_dir, tmp_path, name="digit_odd"):
    target = tmp_path / "models" / name / "1"
    shutil.copytree(models_dir / name / "1", target)
    return target


def _load(path) -> ServedModel:
    model = ServedModel("digit_odd", 1, path, "/device:CPU:0")
    model.load()
    return model


def test_a_stale_copy_leaves_the_version_on_tensorflow(models_dir, tmp_path, caplog):
    path = _copy(models_dir, tmp_path)
    shutil.copy(models_dir / "cifar10" / "1" / LITE_FILE, path / LITE_FILE)  # another model
    with caplog.at_level(logging.WARNING, logger="cnn_serve"):
        model = _load(path)
    assert not model.uses_lite
    assert "stay on TensorFlow" in caplog.text
    pixels = preprocess.prepare(_png(3), model.metadata.input, 28 * 28)
    assert model.predict(pixels[None])["digit"].argmax() == 3


def test_a_version_without_a_copy_gets_one_converted_at_load(models_dir, tmp_path):
    path = _copy(models_dir, tmp_path)
    (path / LITE_FILE).unlink()
    assert _load(path).uses_lite


@pytest.mark.parametrize("digit", [3, 7])
def test_predict_answers_as_without_litert(client, models_dir, digit):
    files = [("file", ("d.png", _png(digit), "image/png"))]
    with make_client(model_dir=models_dir, lite_runtime=False) as plain:
        assert not any(model.uses_lite for model in _served(plain))
        expected = plain.post("/predict", files=files).json()["predictions"][0]["outputs"]
    outputs = client.post("/predict", files=files).json()["predictions"][0]["outputs"]
    assert outputs["digit"]["label"] == expected["digit"]["label"] == str(digit)
    assert outputs["digit"]["confidence"] == pytest.approx(expected["digit"]["confidence"], 1e-5)
    assert outputs["odd"]["probability"] == pytest.approx(expected["odd"]["probability"], 1e-5)
