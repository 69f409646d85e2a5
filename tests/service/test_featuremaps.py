"""Feature maps through HTTP: shapes, pictures, statistics, raw activations, and a NumPy
reference implementation that recomputes every layer from the SavedModel's weights."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import MODELS
from tests.service.handwriting import draw_digit, encode
from tests.service.reference_cnn import forward, savedmodel_weights
from training.architectures import get_architecture
from training.metadata import ModelMetadata

DIGIT = encode(draw_digit(5))


def _colour_image(size=(48, 40)) -> bytes:
    rng = np.random.default_rng(3)
    return encode(Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), np.uint8)), "PNG")


def feature_maps(client, name, data, **form):
    r = client.post(f"/models/{name}/feature-maps", data=form, files={"file": ("x.png", data)})
    assert r.status_code == 200, r.text
    return r


def test_digit_odd_layers_in_graph_order_with_both_branches(client):
    body = feature_maps(client, "digit_odd", DIGIT).json()
    image = body["images"][0]
    layers = {layer["name"]: layer for layer in image["layers"]}
    expected = {
        "conv2d_layer": [26, 26, 32],
        "maxpool_layer": [13, 13, 32],
        "flatten_layer": [5408],
        "pixels_flatten_layer": [784],
        "concat_layer": [6192],
        "digit_dense": [10],
        "odd_dense": [1],
    }
    for name, shape in expected.items():
        assert layers[name]["output_shape"] == shape
    assert layers["concat_layer"]["inbound"] == ["flatten_layer", "pixels_flatten_layer"]
    assert layers["odd_dense"]["inbound"] == ["pixels_flatten_layer"]
    assert layers["conv2d_layer"]["params"] == 320
    assert image["outputs"]["digit"]["label"] == "5"


def test_every_png_decodes_to_its_stated_size(client):
    body = feature_maps(client, "digit_odd", DIGIT).json()
    for layer in body["images"][0]["layers"]:
        pic = layer["image"]
        img = Image.open(io.BytesIO(base64.b64decode(pic["png_base64"])))
        assert img.format == "PNG" and img.size == (pic["width"], pic["height"])
        lo, hi = pic["color_scale"]["range"]
        assert lo <= hi
    conv = next(x for x in body["images"][0]["layers"] if x["name"] == "conv2d_layer")
    assert conv["image"]["layout"].startswith("6x6 grid of 32 channels")
    assert (conv["image"]["width"], conv["image"]["height"]) == (6 * 27 - 1, 6 * 27 - 1)


def test_statistics_match_the_raw_activations(client):
    raw = np.load(io.BytesIO(feature_maps(client, "digit_odd", DIGIT, format="npz").content))
    body = feature_maps(client, "digit_odd", DIGIT).json()
    for layer in body["images"][0]["layers"]:
        values = raw[layer["name"]][0]
        stats = layer["stats"]
        assert stats["min"] == pytest.approx(values.min(), abs=1e-6)
        assert stats["max"] == pytest.approx(values.max(), abs=1e-6)
        assert stats["mean"] == pytest.approx(values.mean(), abs=1e-5)
        assert stats["zero_fraction"] == pytest.approx(np.mean(values == 0), abs=1e-9)


def test_per_channel_scaling_states_each_channel_range(client):
    body = feature_maps(
        client, "cifar10", _colour_image(), scaling="per_channel", layers="conv2d_1,dense_1"
    ).json()
    layers = body["images"][0]["layers"]
    assert [layer["name"] for layer in layers] == ["conv2d_1", "dense_1"]
    scale = layers[0]["image"]["color_scale"]
    assert scale["scaling"] == "per_channel" and len(scale["channel_ranges"]) == 32


def test_npz_download(client):
    r = feature_maps(client, "cifar10", _colour_image(), format="npz")
    assert r.headers["content-type"] == "application/octet-stream"
    assert "attachment" in r.headers["content-disposition"]
    raw = np.load(io.BytesIO(r.content))
    assert raw["conv2d_3"].shape == (1, 4, 4, 64) and raw["class_dense"].shape == (1, 10)
    assert raw["image"].shape == (1, 32, 32, 3)


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.iterdir() if p.is_dir()))
def test_served_activations_match_a_numpy_reference(client, models_dir, name):
    """Every committed model, reference or stronger (batch norm, residual adds, strides)."""
    version = client.get(f"/models/{name}").json()["default_version"]
    path = models_dir / name / str(version)
    meta = ModelMetadata.read(path)
    upload = _colour_image() if meta.input.shape[-1] == 3 else DIGIT
    keras_model = get_architecture(name).build()
    configs = {layer.name: layer.get_config() for layer in keras_model.layers}
    raw = np.load(io.BytesIO(feature_maps(client, name, upload, format="npz").content))
    reference = forward(meta.layers, configs, savedmodel_weights(path), raw["image"])
    assert set(reference) - {"image"} <= set(raw.files)
    for layer in meta.layers:
        np.testing.assert_allclose(
            raw[layer.name], reference[layer.name], atol=1e-4, err_msg=layer.name
        )
