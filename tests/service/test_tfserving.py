"""TensorFlow Serving's REST API (v1), with requests shaped as in its documentation: status,
metadata, row and columnar predict, b64 images; answers equal /predict's; errors are
``{"error": ...}``."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from service.preprocess import TO_UNIT
from tests.service.handwriting import draw_digit, encode

DIGITS = {d: draw_digit(d, canvas=(28, 28), box=(6, 4, 20), pen=0.12) for d in (3, 4, 7)}


def _pixels(image: Image.Image) -> list:
    """A 28x28 digit as the model's input: ink bright, [28, 28, 1] in [0, 1]."""
    arr = (255 - np.asarray(image, np.uint8)).astype(np.float32) * TO_UNIT
    return arr[..., None].tolist()


def _native(client, image: Image.Image, model: str = "digit_odd") -> dict:
    r = client.post("/predict", data={"model": model}, files={"file": ("d.png", encode(image))})
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["outputs"]


def test_model_status(client):
    r = client.get("/v1/models/digit_odd")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get("/v1/models/digit_odd/versions/1").json() == r.json()


def test_metadata_describes_the_signature(client):
    body = client.get("/v1/models/digit_odd/metadata").json()
    assert body["model_spec"] == {"name": "digit_odd", "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]

    def dims(tensor):
        return [int(d["size"]) for d in tensor["tensor_shape"]["dim"]]

    assert {k: dims(v) for k, v in sig["inputs"].items()} == {"image": [-1, 28, 28, 1]}
    assert {k: dims(v) for k, v in sig["outputs"].items()} == {"digit": [-1, 10], "odd": [-1, 1]}
    assert sig["method_name"] == "tensorflow/serving/predict"
    cifar = client.get("/v1/models/cifar10/versions/1/metadata").json()
    inputs = cifar["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert dims(inputs["image"]) == [-1, 32, 32, 3]


def test_row_format_answers_as_predict_does(client):
    r = client.post(
        "/v1/models/digit_odd:predict",
        json={
            "signature_name": "serving_default",
            "instances": [_pixels(DIGITS[d]) for d in (3, 4, 7)],
        },
    )
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [set(p) for p in predictions] == [{"digit", "odd"}] * 3  # several outputs: objects
    for d, p in zip((3, 4, 7), predictions):
        native = _native(client, DIGITS[d])
        assert int(np.argmax(p["digit"])) == d
        np.testing.assert_allclose(
            p["digit"], list(native["digit"]["probabilities"].values()), atol=1e-5
        )
        np.testing.assert_allclose(p["odd"], [native["odd"]["probability"]], atol=1e-5)


def test_columnar_format_and_named_instances(client):
    batch = [_pixels(DIGITS[d]) for d in (4, 7)]
    columnar = client.post(
        "/v1/models/digit_odd/versions/1:predict", json={"inputs": {"image": batch}}
    ).json()["outputs"]
    assert set(columnar) == {"digit", "odd"} and np.shape(columnar["digit"]) == (2, 10)
    named = client.post(
        "/v1/models/digit_odd:predict", json={"instances": [{"image": x} for x in batch]}
    ).json()
    np.testing.assert_allclose(
        columnar["digit"], [p["digit"] for p in named["predictions"]], atol=1e-6
    )


def test_b64_images_get_the_same_preprocessing_as_predict(client):
    photo = draw_digit(4, canvas=(300, 200), box=(120, 40, 120), gradient=40, mode="RGB")
    data = encode(photo, "JPEG", quality=85)
    r = client.post(
        "/v1/models/digit_odd:predict",
        json={"instances": [{"b64": base64.b64encode(data).decode()}]},
    )
    assert r.status_code == 200, r.text
    native = client.post("/predict", files={"file": ("p.jpg", data)}).json()
    expected = list(native["predictions"][0]["outputs"]["digit"]["probabilities"].values())
    np.testing.assert_allclose(r.json()["predictions"][0]["digit"], expected, atol=1e-5)


def test_a_single_output_model_answers_plain_lists(client):
    noise = np.random.default_rng(0).random((2, 32, 32, 3)).round(3)
    row = client.post("/v1/models/cifar10:predict", json={"instances": noise.tolist()}).json()
    col = client.post("/v1/models/cifar10:predict", json={"inputs": noise.tolist()}).json()
    assert np.shape(row["predictions"]) == (2, 10) and np.shape(col["outputs"]) == (2, 10)
    np.testing.assert_allclose(np.sum(row["predictions"], axis=1), [1, 1], atol=1e-4)
    img = Image.fromarray((noise[0] * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    native = _native(client, Image.open(buf), "cifar10")
    np.testing.assert_allclose(
        row["predictions"][0], list(native["class"]["probabilities"].values()), atol=2e-3
    )


def test_classify_answers_label_score_pairs_of_the_first_head(client):
    png = base64.b64encode(encode(DIGITS[7])).decode()
    results = []
    for example in ({"image": _pixels(DIGITS[3])}, {"image": {"b64": png}}):
        r = client.post(
            "/v1/models/digit_odd:classify",
            json={"signature_name": "serving_default", "examples": [example]},
        )
        assert r.status_code == 200, r.text
        results += r.json()["results"]
    assert [[label for label, _ in pairs] for pairs in results] == [list("0123456789")] * 2
    best = [max(pairs, key=lambda pair: pair[1])[0] for pairs in results]
    assert best == ["3", "7"]
    native = _native(client, DIGITS[3])["digit"]["probabilities"]
    np.testing.assert_allclose([s for _, s in results[0]], list(native.values()), atol=1e-5)
    r = client.post("/v1/models/digit_odd/versions/1:classify", json={"instances": [1]})
    assert r.status_code == 400 and "examples" in r.json()["error"]


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"instances": [[[0.0] * 28] * 28]}, 400, "shape"),  # [28, 28] per instance, no channel
        ({"instances": [[1, 2], [3]]}, 400, "one shape"),
        ({"instances": []}, 400, "non-empty"),
        ({"instances": [{"b64": "!!"}]}, 400, "base64"),
        ({"instances": [{"pixels": 1}]}, 400, "unknown input"),
        ({"instances": [{"b64": "aGk="}, [[[0.0]]]]}, 400, "mix"),
        ({"inputs": [1], "instances": [1]}, 400, "exactly one"),
        ({"signature_name": "classify_x", "instances": [1]}, 400, "signature"),
        ({"signature_name": {}, "instances": [1]}, 400, "signature_name is a string"),
        # values that are not finite numbers: a 401-digit integer (OverflowError in NumPy once),
        # numeric strings and booleans (NumPy converts both), null, beyond float32
        ({"instances": [[[[10**400]] * 28] * 28]}, 400, "not numbers"),
        ({"instances": [[[["0.5"]] * 28] * 28]}, 400, "not numbers"),
        ({"instances": [[[[True]] + [[0.5]] * 27] * 28]}, 400, "not numbers"),
        ({"instances": [[[[None]] * 28] * 28]}, 400, "not numbers"),
        ({"instances": [[[[1e39]] * 28] * 28]}, 400, "out of float32's range"),
        (
            {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]},
            400,
            "not a decodable image",
        ),
    ],
)
def test_bad_requests_are_400_in_tf_servings_shape(client, body, status, words):
    r = client.post("/v1/models/digit_odd:predict", content=json.dumps(body))
    assert r.status_code == status and set(r.json()) == {"error"}, r.text
    assert words in r.json()["error"]


def test_hostile_bodies_and_unknown_models(client):
    deep = b"[" * 10_000 + b"]" * 10_000
    nan = json.dumps({"instances": [np.full((28, 28, 1), np.nan).tolist()]}).encode()
    for content in (deep, b"{not json", b"[1, 2]", nan):
        r = client.post("/v1/models/digit_odd:predict", content=content)
        assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    r = client.get("/v1/models/resnet")
    assert r.status_code == 404 and "resnet" in r.json()["error"]
    r = client.get("/v1/models/digit_odd/versions/x")  # no such resource
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_echoed_names_are_cut_short(client):
    r = client.get("/v1/models/" + "m" * 60_000)
    assert r.status_code == 404 and len(r.text) < 300 and "60,002 chars" in r.text
    r = client.post(
        "/v1/models/digit_odd:predict", json={"signature_name": "s" * 10_000, "instances": [1]}
    )
    assert r.status_code == 400 and len(r.text) < 300


def test_classify_reads_examples_as_strictly(client):
    r = client.post(
        "/v1/models/digit_odd:classify",
        content=json.dumps({"examples": [{"image": [[[10**400]] * 28] * 28}]}),
    )
    assert r.status_code == 400 and "not numbers" in r.json()["error"]
