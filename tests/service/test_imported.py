"""Imported models (``cnn-serve import``, built in the test) through every door: /predict,
the Open Inference Protocol, TF Serving, feature maps, Grad-CAM and hot reload, answering what
the Keras model itself answers on the same pixels in its own value range."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import admin_client, make_client, oip_fp32
from tests.training.test_importer import cifar_like, two_heads
from training.import_command import main as import_main

ATOL = 1e-4


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    sources = root / "sources"
    sources.mkdir()
    cifar_like().save(sources / "mine.keras")
    two_heads().save(sources / "shapes.h5")
    (sources / "shapes.txt").write_text("circle\nsquare\ntriangle\n")
    models = root / "models"
    assert (
        import_main(
            [
                str(sources / "mine.keras"),
                "--name",
                "mine",
                "--value-range",
                "0,255",
                "--model-dir",
                str(models),
            ],
            models,
        )
        == 0
    )
    assert (
        import_main(
            [
                str(sources / "shapes.h5"),
                "--name",
                "shapes",
                "--labels",
                f"shape={sources / 'shapes.txt'}",
                "--value-range=-1,1",
                "--model-dir",
                str(models),
            ],
            models,
        )
        == 0
    )
    return root


@pytest.fixture(scope="module")
def client(repo):
    with admin_client(model_dir=repo / "models", default_model="mine") as c:
        yield c


@pytest.fixture(scope="module")
def keras_models(repo):
    return {
        "mine": keras.saving.load_model(repo / "sources" / "mine.keras"),
        "shapes": keras.saving.load_model(repo / "sources" / "shapes.h5"),
    }


def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buf, fmt)
    return buf.getvalue()


def _images(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), np.uint8)


def _keras(model, x: np.ndarray) -> dict[str, np.ndarray]:
    out = model(x)
    return (
        {k: np.asarray(v) for k, v in out.items()}
        if isinstance(out, dict)
        else {"class": np.asarray(out)}
    )


@pytest.mark.parametrize(
    "name,shape,scale,offset",
    [("mine", (32, 32, 3), 255.0, 0.0), ("shapes", (20, 24, 1), 2.0, -1.0)],
)
def test_predict_equals_the_keras_model_on_pixels_in_its_value_range(
    client, keras_models, name, shape, scale, offset
):
    images = _images(shape, 3)
    want = _keras(keras_models[name], images.astype(np.float32) / 255 * scale + offset)
    for fmt in ("PNG", "BMP"):  # decoded in the TensorFlow graph, and by Pillow
        r = client.post(
            "/predict",
            data={"model": name},
            files=[("file", (f"{i}.{fmt}", _png(img, fmt))) for i, img in enumerate(images)],
        )
        assert r.status_code == 200, r.text
        for i, prediction in enumerate(r.json()["predictions"]):
            for head, out in prediction["outputs"].items():
                got = (
                    list(out["probabilities"].values())
                    if out["kind"] == "multiclass"
                    else [out["probability"]]
                )
                np.testing.assert_allclose(got, want[head][i], atol=ATOL)
    if name == "shapes":
        assert r.json()["predictions"][0]["outputs"]["shape"]["label"] in {
            "circle",
            "square",
            "triangle",
        }


def test_oip_and_tfserving_tensors_are_the_models_own_input(client, keras_models):
    """FP32 tensors are passed through as TF Serving and Triton pass them: 0..255 here."""
    x = _images((32, 32, 3), 2, seed=4).astype(np.float32)
    want = _keras(keras_models["mine"], x)["class"]
    oip = client.post(
        "/v2/models/mine/infer",
        json=oip_fp32(x),
    )
    assert oip.status_code == 200, oip.text
    got = np.array(oip.json()["outputs"][0]["data"]).reshape(2, 10)
    np.testing.assert_allclose(got, want, atol=ATOL)
    tfs = client.post("/v1/models/mine:predict", content=json.dumps({"instances": x.tolist()}))
    assert tfs.status_code == 200, tfs.text
    np.testing.assert_allclose(np.array(tfs.json()["predictions"]), want, atol=ATOL)


def test_feature_maps_show_every_layer_of_the_users_model(client, keras_models):
    image = _images((20, 24, 1), 1, seed=2)
    r = client.post(
        "/models/shapes/feature-maps",
        files={"file": ("s.png", _png(image[0]))},
        data={"format": "npz"},
    )
    assert r.status_code == 200, r.text
    arrays = np.load(io.BytesIO(r.content))
    assert {"pixels", "features", "pool", "shape", "big"} <= set(arrays.files)
    x = image.astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(arrays["pixels"], x, atol=1e-6)
    model = keras_models["shapes"]
    features = keras.Model(model.inputs, model.get_layer("features").output)(x)
    np.testing.assert_allclose(arrays["features"], features, atol=ATOL)
    pictures = client.post(
        "/models/shapes/feature-maps", files={"file": ("s.png", _png(image[0]))}
    ).json()
    assert [layer["name"] for layer in pictures["images"][0]["layers"]][:2] == [
        "pixels",
        "features",
    ]


def test_grad_cam_answers_for_an_imported_model(client):
    r = client.post(
        "/models/mine/explain", files={"file": ("x.png", _png(_images((32, 32, 3), 1)[0]))}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["layer"] == "pool" and np.array(body["heatmap"]).shape == (32, 32)
    binary = client.post(
        "/models/shapes/explain",
        data={"output": "big"},
        files={"file": ("x.png", _png(_images((20, 24, 1), 1)[0]))},
    )
    assert binary.status_code == 200 and binary.json()["label"] in ("0", "1")


def test_a_version_imported_while_serving_is_served_after_a_reload(client, repo):
    models = repo / "models"
    cifar_like(seed=9).save(repo / "sources" / "mine2.keras")
    assert (
        import_main(
            [
                str(repo / "sources" / "mine2.keras"),
                "--name",
                "mine",
                "--value-range",
                "0,255",
                "--model-dir",
                str(models),
            ],
            models,
        )
        == 0
    )
    r = client.post("/models/mine/reload")
    assert r.status_code == 200 and r.json()["default_version"] == 2
    assert (
        client.post(
            "/predict",
            data={"model": "mine"},
            files={"file": ("x.png", _png(_images((32, 32, 3), 1)[0]))},
        ).json()["version"]
        == 2
    )


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """Transfer models: a Keras Applications base, and a user's Sequential base, imported."""
    from tests.training.test_graph import sequential_base_model, transfer_model

    root = tmp_path_factory.mktemp("nested")
    models = root / "models"
    built = {"transfer": transfer_model(), "stacked": sequential_base_model()}
    for name, model in built.items():
        model.save(root / f"{name}.keras")
        assert (
            import_main(
                [str(root / f"{name}.keras"), "--name", name, "--model-dir", str(models)], models
            )
            == 0
        )
    with make_client(model_dir=models, default_model="transfer") as c:
        yield c, built


def test_a_nested_bases_inner_layers_are_served_and_explained(nested):
    client, built = nested
    base = "mobilenetv2_0.35_32"
    image = _images((32, 32, 3), 1, seed=6)
    png = _png(image[0])
    r = client.post(
        "/models/transfer/feature-maps",
        files={"file": ("x.png", png)},
        data={"format": "npz", "layers": f"{base}/block_1_expand,kind"},
    )
    assert r.status_code == 200, r.text
    arrays = np.load(io.BytesIO(r.content))
    x = image.astype(np.float32) / 255
    inner = built["transfer"].get_layer(base)
    want = keras.Model(inner.inputs, inner.get_layer("block_1_expand").output)(x)
    np.testing.assert_allclose(arrays[f"{base}/block_1_expand"], want, atol=ATOL)
    np.testing.assert_allclose(arrays["kind"], built["transfer"](x), atol=ATOL)
    cam = client.post("/models/transfer/explain", files={"file": ("x.png", png)})
    assert cam.status_code == 200, cam.text
    assert cam.json()["layer"] == f"{base}/out_relu"  # the default: inside the base
    chosen = client.post(
        "/models/transfer/explain",
        files={"file": ("x.png", png)},
        data={"layer": f"{base}/block_3_project"},
    )
    assert chosen.status_code == 200 and chosen.json()["layer"] == f"{base}/block_3_project"
    rows = [layer["name"] for layer in client.get("/models/stacked/versions/1").json()["layers"]]
    assert rows == ["image", "features/conv_a", "features/pool_a", "flat", "head"]
    stacked = client.post(
        "/models/stacked/explain", files={"file": ("x.png", _png(_images((20, 20, 1), 1)[0]))}
    )
    assert stacked.status_code == 200 and stacked.json()["layer"] == "features/pool_a"


def test_a_keras_model_of_uint8_pixels(tmp_path):
    keras.utils.set_random_seed(3)
    pixels = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(pixels))
    model = keras.Model(pixels, keras.layers.Dense(3, activation="softmax", name="kind")(x))
    model.save(tmp_path / "u8.keras")
    models = tmp_path / "models"
    assert (
        import_main(
            [str(tmp_path / "u8.keras"), "--name", "u8", "--model-dir", str(models)], models
        )
        == 0
    )  # 0..255 without being told
    image = _images((8, 8, 1), 1, seed=8)
    with make_client(model_dir=models, default_model="u8") as client:
        assert client.get("/models/u8").json()["input"]["value_range"] == [0.0, 255.0]
        for fmt in ("PNG", "BMP"):
            r = client.post("/predict", files={"file": (f"x.{fmt}", _png(image[0], fmt))})
            got = list(r.json()["predictions"][0]["outputs"]["kind"]["probabilities"].values())
            np.testing.assert_allclose(got, np.asarray(model(image))[0], atol=1e-6)
