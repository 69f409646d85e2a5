"""Grad-CAM at POST /models/{name}/explain: equal to the keras.io steps recomputed here on the
version's model.keras, its heat on the ink of digits, every head, and clear errors."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from service.gradcam import GradCam, TracedCache
from service.preprocess import decode, to_model_input
from tests.service.handwriting import draw_digit, encode
from training.datasets import read_mnist, split

MNIST = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"


def keras_io_gradcam(
    model_dir: Path,
    image: np.ndarray,
    head: str,
    layer: str,
    class_index: int,
    binary: bool = False,
) -> np.ndarray:
    """The keras.io example's steps, written out independently of the service."""
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    x = tf.constant(image[None], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        conv_output, preds = grad_model(x)
        p = preds[head]
        class_channel = (
            (p[:, 0] if class_index == 1 else 1 - p[:, 0]) if binary else p[:, class_index]
        )
    grads = tape.gradient(class_channel, conv_output)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(conv_output[0] @ pooled[..., tf.newaxis], -1)
    heatmap = tf.maximum(heatmap, 0)
    top = tf.reduce_max(heatmap)
    heatmap = heatmap / top if top > 0 else heatmap
    return tf.image.resize(heatmap[..., None], image.shape[:2])[..., 0].numpy()


def _photo() -> bytes:
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).resize((64, 48))
    return encode(image)


def _explain(client, model: str, data: bytes, **fields):
    return client.post(
        f"/models/{model}/explain",
        files={"file": ("x.png", data)},
        data={k: str(v) for k, v in fields.items()},
    )


CASES = [  # model, image, fields, head, layer the service must choose, class, binary head
    ("digit_odd", "seven", {}, "digit", "maxpool_layer", None, False),
    (
        "digit_odd",
        "seven",
        {"class_index": 1, "layer": "conv2d_layer"},
        "digit",
        "conv2d_layer",
        1,
        False,
    ),
    ("digit_odd", "seven", {"output": "odd"}, "odd", "image", None, True),
    ("digit_odd", "seven", {"output": "odd", "class_index": 0}, "odd", "image", 0, True),
    ("cifar10", "photo", {}, "class", "conv2d_3", None, False),
    ("cifar10", "photo", {"layer": "conv2d_1", "class_index": 4}, "class", "conv2d_1", 4, False),
    # the stronger models: digit_odd_plus's odd head reads learned features, so its default
    # layer is the last conv, not the pixels; the ResNet's is its last residual block's output
    ("digit_odd_plus", "seven", {}, "digit", "conv2d_3", None, False),
    ("digit_odd_plus", "seven", {"output": "odd"}, "odd", "conv2d_3", None, True),
    ("cifar10_resnet", "photo", {}, "class", "stage3_block3_out", None, False),
    (
        "cifar10_resnet",
        "photo",
        {"layer": "stage2_block1_add", "class_index": 2},
        "class",
        "stage2_block1_add",
        2,
        False,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[3]}-{c[4]}-{c[5]}")
def test_heatmap_equals_the_keras_io_steps(client, models_dir, case):
    model, picture, fields, head, layer, class_index, binary = case
    data = encode(draw_digit(7)) if picture == "seven" else _photo()
    r = _explain(client, model, data, **fields)
    assert r.status_code == 200, r.text
    body = r.json()
    newest = client.get(f"/models/{model}").json()["default_version"]
    assert (body["model"], body["version"], body["output"], body["layer"]) == (
        model,
        newest,
        head,
        layer,
    )
    spec = client.app.state.server.registry.get(model).metadata
    labels = next(o.labels for o in spec.outputs if o.name == head)
    assert body["label"] == labels[body["class_index"]]
    if class_index is not None:
        assert body["class_index"] == class_index
    image = to_model_input(decode(data, 10**8), spec.input)
    want = keras_io_gradcam(
        models_dir / model / str(newest), image, head, layer, body["class_index"], binary
    )
    heatmap = np.array(body["heatmap"])
    assert heatmap.shape == tuple(spec.input.shape[:2])
    np.testing.assert_allclose(heatmap, want, atol=1e-4)
    assert 0 <= heatmap.min() and heatmap.max() <= 1
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay"])))
    assert overlay.mode == "RGB" and overlay.width >= 224


def test_the_default_class_is_the_prediction(client):
    seven = encode(draw_digit(7))
    predicted = client.post("/predict", files={"file": ("d.png", seven)}).json()
    body = _explain(client, "digit_odd", seven).json()
    assert body["label"] == predicted["predictions"][0]["outputs"]["digit"]["label"] == "7"
    odd = _explain(client, "digit_odd", seven, output="odd").json()
    assert odd["label"] == predicted["predictions"][0]["outputs"]["odd"]["label"]


def test_nothing_positive_gives_zeros_not_nan(client, digit_odd_model):
    """A blank input: every activation of the ReLU layers is flat; the map is all zeros."""
    cam = GradCam(
        digit_odd_model.path / "model.keras", digit_odd_model.metadata, TracedCache(8, 2**30)
    )
    blank = np.zeros((28, 28, 1), np.float32)
    result = cam(blank, digit_odd_model.metadata.outputs[1], 0, "image")
    assert np.isfinite(result.heatmap).all() and result.heatmap.max() == 0


def _ink_hits(cam: GradCam, images: np.ndarray, head) -> float:
    """The share of images whose heatmap peaks inside the ink's bounding box grown by 2 px."""
    hits = 0
    for image in images:
        heatmap = cam(image, head, None, None).heatmap
        y, x = np.unravel_index(heatmap.argmax(), heatmap.shape)
        rows, cols = np.nonzero(image[..., 0] > 0.25)
        hits += bool(
            rows.min() - 2 <= y <= rows.max() + 2 and cols.min() - 2 <= x <= cols.max() + 2
        )
    return hits / len(images)


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/datasets/mnist")
def test_heat_lies_on_the_ink_of_mnist_validation_digits(digit_odd_model):
    data = read_mnist(MNIST)
    _, val = split(len(data.images), 0.1, 42)  # training's validation split
    images = data.images[val[:200]].astype(np.float32) / 255
    cam = GradCam(
        digit_odd_model.path / "model.keras", digit_odd_model.metadata, TracedCache(8, 2**30)
    )
    assert _ink_hits(cam, images, digit_odd_model.metadata.outputs[0]) >= 0.85


def test_heat_lies_on_the_ink_of_pen_digits(digit_odd_model):
    """The same on 200 digits drawn here (CI has no MNIST): ten digits, twenty pens each."""
    spec = digit_odd_model.metadata.input
    images = np.stack(
        [
            to_model_input(draw_digit(d, pen=0.06 + 0.004 * k), spec)
            for d in range(10)
            for k in range(20)
        ]
    )
    cam = GradCam(
        digit_odd_model.path / "model.keras", digit_odd_model.metadata, TracedCache(8, 2**30)
    )
    assert _ink_hits(cam, images, digit_odd_model.metadata.outputs[0]) >= 0.85


def test_bad_requests_are_clear_4xx(client, tmp_path, models_dir):
    seven = encode(draw_digit(7))
    for fields, status, code in [
        ({"output": "nope"}, 422, "invalid_parameter"),
        ({"class_index": 10}, 422, "invalid_parameter"),
        ({"output": "odd", "class_index": 2}, 422, "invalid_parameter"),
        ({"layer": "digit_dense"}, 422, "invalid_parameter"),
        ({"layer": "nope"}, 404, "layer_not_found"),
        ({"version": 9}, 404, "version_not_found"),
    ]:
        r = _explain(client, "digit_odd", seven, **fields)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), fields
    two = client.post(
        "/models/digit_odd/explain", files=[("file", ("a.png", seven)), ("file", ("b.png", seven))]
    )
    assert two.status_code == 422
    assert _explain(client, "digit_odd", b"not an image").status_code == 400


def test_a_version_without_model_keras_answers_404(tmp_path, models_dir):
    """Grad-CAM works from what a version ships; without model.keras it says so."""
    import shutil

    from tests.service.conftest import make_client

    shutil.copytree(
        models_dir / "digit_odd" / "1",
        tmp_path / "digit_odd" / "1",
        ignore=shutil.ignore_patterns("model.keras"),
    )
    with make_client(model_dir=tmp_path) as client:
        r = _explain(client, "digit_odd", encode(draw_digit(7)))
        assert r.status_code == 404 and r.json()["error"]["code"] == "explanation_unavailable"
        assert (
            client.post("/predict", files={"file": ("d.png", encode(draw_digit(7)))}).status_code
            == 200
        )
