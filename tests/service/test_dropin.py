"""SavedModels dropped into the repository without metadata.json serve anyway (TF Serving's
habit, Triton's auto-complete): inputs and outputs from the serving signature, kinds from
heads.json (else raw values, never probabilities), labels from labels.txt, the model's own
answers; no feature maps or Grad-CAM, said in a clear 404."""

from __future__ import annotations

import io
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import MODELS
from tests.service.conftest import make_client, oip_fp32

ATOL = 1e-4


class UInt8Heads(tf.Module):
    """What tf.saved_model.save writes for a model that takes uint8 pixels, with two heads."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(3).normal(size=(64, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.uint8, name="pixels")])
    def serve(self, pixels):
        x = tf.reshape(tf.cast(pixels, tf.float32) / 255.0, [-1, 64]) @ self.w
        return {"kind": tf.nn.softmax(x[:, :3]), "bright": tf.sigmoid(x[:, 3:])}


def _keras_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropin")
    shutil.copytree(MODELS / "digit_odd" / "1", root / "digit_odd" / "1")
    model = _keras_model()
    model.export(str(root / "exported" / "1"), verbose=False)  # Keras 3's model.export()
    (root / "exported" / "1" / "labels.txt").write_text("north\neast\nsouth\nwest\n")
    module = UInt8Heads()
    tf.saved_model.save(
        module, str(root / "uint8" / "3"), signatures={"serving_default": module.serve}
    )
    (root / "uint8" / "3" / "labels-kind.txt").write_text("a\nb\nc\n")
    (root / "uint8" / "3" / "heads.json").write_text('{"kind": "multiclass", "bright": "binary"}')

    class Tabular(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 10], tf.float32)])
        def serve(self, x):
            return {"y": x}

    tabular = Tabular()
    tf.saved_model.save(
        tabular, str(root / "tabular" / "1"), signatures={"serving_default": tabular.serve}
    )
    return root, model, module


@pytest.fixture(scope="module")
def client(repo):
    with make_client(model_dir=repo[0]) as c:
        yield c


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buf, "PNG")
    return buf.getvalue()


def test_without_heads_json_its_outputs_are_plain_values(client, repo):
    """A signature does not say whether its numbers are probabilities: without heads.json
    they are served as raw values by label, and nothing classifies them."""
    _, model, _ = repo
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3), np.uint8)
    r = client.post("/predict", data={"model": "exported"}, files={"file": ("x.png", _png(pixels))})
    assert r.status_code == 200, r.text
    out = r.json()["predictions"][0]["outputs"]["output_0"]
    want = np.asarray(model(pixels[None].astype(np.float32) / 255))[0]
    assert out["kind"] == "raw" and "probabilities" not in out and "label" not in out
    np.testing.assert_allclose(list(out["values"].values()), want, atol=ATOL)
    assert list(out["values"]) == ["north", "east", "south", "west"]
    detail = client.get("/models/exported").json()
    meta = detail["metadata"]
    assert meta["architecture"] == "SavedModel" and meta["input"]["shape"] == [16, 16, 3]
    assert meta["outputs"][0] == {
        "name": "output_0",
        "kind": "raw",
        "labels": ["north", "east", "south", "west"],
    }
    name = meta["input"]["name"]
    x = {"examples": [{name: (pixels / 255).tolist()}]}
    classify = client.post("/v1/models/exported:classify", json=x)
    assert classify.status_code == 400 and "output_0 (raw)" in classify.json()["error"]
    oip = client.post(
        "/v2/models/exported/infer",
        json={
            **oip_fp32((pixels[None] / 255).astype(np.float32), name),
            "outputs": [{"name": "output_0", "parameters": {"classification": 2}}],
        },
    )
    assert oip.status_code == 400 and "classification" in oip.json()["error"]


def test_protocol_tensors_pass_through(client, repo):
    _, model, _ = repo
    x = np.random.default_rng(2).random((2, 16, 16, 3), np.float32)
    meta = client.get("/v1/models/exported/metadata").json()
    (name,) = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    tfs = client.post("/v1/models/exported:predict", content=json.dumps({"instances": x.tolist()}))
    assert tfs.status_code == 200, tfs.text
    np.testing.assert_allclose(tfs.json()["predictions"], model(x), atol=ATOL)
    oip = client.post(
        "/v2/models/exported/infer",
        json=oip_fp32(x, name),
    )
    assert oip.status_code == 200, oip.text
    np.testing.assert_allclose(
        np.reshape(oip.json()["outputs"][0]["data"], (2, 4)), model(x), atol=ATOL
    )


def test_a_uint8_savedmodel_with_two_heads(client, repo):
    _, _, module = repo
    pixels = np.random.default_rng(4).integers(0, 256, (8, 8, 1), np.uint8)
    r = client.post("/predict", data={"model": "uint8"}, files={"file": ("x.png", _png(pixels))})
    assert r.status_code == 200, r.text
    outputs = r.json()["predictions"][0]["outputs"]
    want = module.serve(tf.constant(pixels[None]))
    np.testing.assert_allclose(
        list(outputs["kind"]["probabilities"].values()), want["kind"][0], atol=ATOL
    )
    assert list(outputs["kind"]["probabilities"]) == ["a", "b", "c"]
    np.testing.assert_allclose(outputs["bright"]["probability"], want["bright"][0, 0], atol=ATOL)
    meta = client.get("/v1/models/uint8/metadata").json()["metadata"]["signature_def"]
    assert meta["signature_def"]["serving_default"]["inputs"]["pixels"]["dtype"] == "DT_UINT8"


def test_feature_maps_and_grad_cam_say_how_to_get_them(client):
    png = _png(np.zeros((16, 16, 3), np.uint8))
    maps = client.post("/models/exported/feature-maps", files={"file": ("x.png", png)})
    assert maps.status_code == 404 and maps.json()["error"]["code"] == "feature_maps_unavailable"
    assert "cnn-serve import" in maps.json()["error"]["message"]
    cam = client.post("/models/exported/explain", files={"file": ("x.png", png)})
    assert cam.status_code == 404 and "cnn-serve import" in cam.json()["error"]["message"]


def test_a_savedmodel_that_is_not_an_image_model_fails_alone(client):
    tabular = client.get("/models/tabular").json()
    assert tabular["versions"][0]["status"] == "failed"
    assert "serving_default signature" in tabular["versions"][0]["error"]
    assert client.get("/health/ready").status_code == 200  # the others serve on
