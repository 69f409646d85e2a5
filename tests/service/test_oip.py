"""The Open Inference Protocol (V2) spoken by the real ``tritonclient.http`` over a socket,
binary and JSON tensors, pixels and image files, for both shipped models; answers equal
``/predict``'s; hostile requests get a 4xx ``{"error": ...}``."""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from service.preprocess import decode, to_model_input
from tests.conftest import committed_versions
from tests.service.conftest import oip_fp32
from tests.service.handwriting import draw_digit, encode

DIGIT_MODELS = ("digit_odd", "digit_odd_plus")  # the same input and heads
MODELS = (*DIGIT_MODELS, "cifar10", "cifar10_resnet")


def _versions(model: str) -> list[str]:
    return [p.name for p in committed_versions(model)]


def _photo(seed: int) -> Image.Image:
    """A smooth colour picture (a CIFAR-sized blur of noise, upscaled)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((96, 80), Image.BICUBIC)


def _files(model: str) -> list[bytes]:
    """Two PNGs (one the graph decodes, one Pillow must) and a JPEG for ``model``."""
    if model in DIGIT_MODELS:
        images = [draw_digit(7, canvas=(28, 28), box=(6, 4, 20)), draw_digit(2), draw_digit(5)]
    else:
        images = [_photo(1).resize((32, 32)), _photo(2), _photo(3)]
    files = [encode(images[0]), encode(images[1])]
    jpeg = io.BytesIO()
    images[2].convert("RGB").save(jpeg, "JPEG", quality=90)
    return [*files, jpeg.getvalue()]


def _expected(client, model: str, files: list[bytes], version: str = "") -> dict[str, np.ndarray]:
    """``/predict``'s probabilities for ``files``, as arrays [n, units] per output."""
    r = client.post(
        "/predict",
        data={"model": model, **({"version": version} if version else {})},
        files=[("file", (f"f{i}", data)) for i, data in enumerate(files)],
    )
    assert r.status_code == 200, r.text
    rows = [p["outputs"] for p in r.json()["predictions"]]
    labels = {o["name"]: o["labels"] for o in client.get(f"/models/{model}").json()["outputs"]}
    return {
        name: np.array(
            [
                [row[name]["probabilities"][label] for label in names]
                if row[name]["kind"] == "multiclass"
                else [row[name]["probability"]]
                for row in rows
            ]
        )
        for name, names in labels.items()
    }


def _pixels(model: str, files: list[bytes], client) -> np.ndarray:
    """What ``/predict``'s preprocessing makes of ``files``: the model's FP32 input."""
    spec = client.app.state.server.registry.get(model).metadata.input
    return np.stack([to_model_input(decode(data, 10**8), spec) for data in files])


@pytest.fixture(scope="module")
def triton_client(live_url):
    with triton.InferenceServerClient(url=live_url) as c:
        yield c


def test_server_health_and_metadata(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    meta = triton_client.get_server_metadata()
    assert meta["name"] == "cnn-serve" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata_and_readiness(triton_client, model):
    assert triton_client.is_model_ready(model)
    assert triton_client.is_model_ready(model, "1")
    shape = [-1, 28, 28, 1] if model in DIGIT_MODELS else [-1, 32, 32, 3]
    for meta, versions in (
        (triton_client.get_model_metadata(model), _versions(model)),
        (triton_client.get_model_metadata(model, "1"), ["1"]),
    ):
        assert meta["name"] == model and meta["versions"] == versions
        assert meta["platform"] == "tensorflow_savedmodel"
        assert meta["inputs"] == [
            {"name": "image", "datatype": "FP32", "shape": shape},
            {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]},
        ]
    outputs = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert outputs == (
        {"digit": [-1, 10], "odd": [-1, 1]} if model in DIGIT_MODELS else {"class": [-1, 10]}
    )
    with pytest.raises(InferenceServerException, match="no model"):
        triton_client.get_model_metadata("nope")
    assert not triton_client.is_model_ready(model, "9")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["", "1"], ids=["newest", "v1"])
def test_infer_equals_predict(triton_client, client, model, binary, version):
    files = _files(model)
    expected = _expected(client, model, files, version)
    pixels = triton.InferInput(
        "image", [len(files), *_pixels(model, files, client).shape[1:]], "FP32"
    )
    pixels.set_data_from_numpy(_pixels(model, files, client), binary_data=binary)
    images = triton.InferInput("image_bytes", [len(files)], "BYTES")
    sent = np.array(files if binary else [base64.b64encode(f) for f in files], dtype=object)
    images.set_data_from_numpy(sent, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in expected]
    for tensor in (pixels, images):
        result = triton_client.infer(
            model, [tensor], model_version=version, outputs=outputs, request_id="req-7"
        )
        assert result.get_response()["id"] == "req-7"
        assert result.get_response()["model_version"] == (version or _versions(model)[-1])
        for name, want in expected.items():
            np.testing.assert_allclose(result.as_numpy(name), want, atol=1e-5)


def test_default_request_answers_every_output_in_binary(triton_client, client):
    """No ``outputs`` given: tritonclient asks for all of them in binary (its default)."""
    files = _files("digit_odd")[:1]
    tensor = triton.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    result = triton_client.infer("digit_odd", [tensor])
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["digit", "odd"]
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert result.as_numpy("digit").shape == (1, 10) and result.as_numpy("odd").shape == (1, 1)
    assert result.as_numpy("digit").argmax() == 7


def test_output_selection_and_json_shape(client):
    """Plain JSON (no extension): one output chosen, data flat and row-major."""
    pixels = np.zeros((2, 28, 28, 1), np.float32)
    r = client.post(
        "/v2/models/digit_odd/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "shape": [2, 28, 28, 1],
                    "datatype": "FP32",
                    "data": pixels.tolist(),
                }
            ],
            "outputs": [{"name": "odd"}],
            "parameters": {"custom": 1},
        },
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["model_name"] == "digit_odd" and "id" not in body
    (odd,) = body["outputs"]
    assert odd["name"] == "odd" and odd["shape"] == [2, 1] and len(odd["data"]) == 2


def _binary_request(header: dict, binary: bytes, length: int | bytes | None = None):
    head = json.dumps(header).encode()
    value = (
        str(len(head) if length is None else length).encode()
        if not isinstance(length, bytes)
        else length
    )
    return head + binary, {"Inference-Header-Content-Length": value}


PIXELS = {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32"}
ZEROS = bytes(4 * 28 * 28)


def _deep(depth: int) -> bytes:
    return b'{"inputs": [' + b"[" * depth + b"]" * depth + b"]}"


HOSTILE = {
    "wrong datatype": ({"inputs": [{**PIXELS, "datatype": "INT32", "data": [0] * 784}]}, None),
    "data shorter than shape": ({"inputs": [{**PIXELS, "data": [0.5] * 783}]}, None),
    "data not numbers": ({"inputs": [{**PIXELS, "data": ["a"] * 784}]}, None),
    "ragged data": ({"inputs": [{**PIXELS, "data": [[0.5], [0.5, 0.5]]}]}, None),
    "NaN pixels": ({"inputs": [{**PIXELS, "data": [float("nan")] * 784}]}, None),
    "2^60 batch": ({"inputs": [{**PIXELS, "shape": [2**60, 28, 28, 1], "data": [0]}]}, None),
    "2^60 per image": ({"inputs": [{**PIXELS, "shape": [1, 2**60, 2**60, 1], "data": [0]}]}, None),
    "wrong image shape": (
        {"inputs": [{**PIXELS, "shape": [1, 32, 32, 3], "data": [0] * 3072}]},
        None,
    ),
    "negative dimension": ({"inputs": [{**PIXELS, "shape": [-1, 28, 28, 1], "data": [0]}]}, None),
    "unknown input": ({"inputs": [{**PIXELS, "name": "pixels", "data": [0] * 784}]}, None),
    "two inputs": ({"inputs": [{**PIXELS, "data": [0] * 784}] * 2}, None),
    "no inputs": ({"inputs": []}, None),
    "no data": ({"inputs": [PIXELS]}, None),
    "duplicate outputs": (
        {
            "inputs": [{**PIXELS, "data": [0] * 784}],
            "outputs": [{"name": "digit"}, {"name": "digit"}],
        },
        None,
    ),
    "unknown output": (
        {"inputs": [{**PIXELS, "data": [0] * 784}], "outputs": [{"name": "logits"}]},
        None,
    ),
    "BYTES not base64": (
        {
            "inputs": [
                {"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}
            ]
        },
        None,
    ),
    "BYTES count": (
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [2],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(b"x").decode()],
                }
            ]
        },
        None,
    ),
    "not an image": (
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(b"hello").decode()],
                }
            ]
        },
        None,
    ),
    "truncated binary": _binary_request(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": len(ZEROS)}}]}, ZEROS[:-7]
    ),
    "binary size not the shape's": _binary_request(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": 8}}]}, ZEROS[:8]
    ),
    "bytes after the tensors": _binary_request(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": len(ZEROS)}}]}, ZEROS + b"xx"
    ),
    "header length past the body": _binary_request(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": len(ZEROS)}}]},
        ZEROS,
        length=10**9,
    ),
    "BYTES element past its size": _binary_request(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        struct.pack("<I", 2**31) + b"abcd",
    ),
    "a 401-digit integer": ({"inputs": [{**PIXELS, "data": [10**400] + [0] * 783}]}, None),
    "numeric strings": ({"inputs": [{**PIXELS, "data": ["0.5"] * 784}]}, None),
    "a boolean among numbers": ({"inputs": [{**PIXELS, "data": [True] + [0.5] * 783}]}, None),
    "shape of huge numbers": ({"inputs": [{**PIXELS, "shape": [10**400], "data": [0]}]}, None),
    "header length in Unicode digits": _binary_request(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": len(ZEROS)}}]},
        ZEROS,
        length=b"\xb2",
    ),  # latin-1 '²', which str.isdigit() takes
    "header length of 5,000 digits": _binary_request(
        {"inputs": [{**PIXELS, "parameters": {"binary_data_size": len(ZEROS)}}]},
        ZEROS,
        length=b"9" * 5000,
    ),
    "BYTES length cut": _binary_request(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 2},
                }
            ]
        },
        b"ab",
    ),
}


def _post(client, body, headers=None):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return client.post("/v2/models/digit_odd/infer", content=body, headers=headers or {})


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_requests_get_a_4xx_in_the_protocols_shape(client, case):
    body, headers = HOSTILE[case]
    r = _post(client, body, headers)
    assert r.status_code == 400, (r.status_code, r.text)
    assert set(r.json()) == {"error"} and r.json()["error"]


@pytest.mark.parametrize(
    "body",
    [_deep(10_000), b"{", b"[]", b"\xff\xfe", b""],
    ids=["nested 10,000 deep", "truncated JSON", "not an object", "not UTF-8", "empty"],
)
def test_malformed_json_gets_a_400(client, body):
    r = _post(client, body)
    assert r.status_code == 400 and set(r.json()) == {"error"}


def test_limits_and_unknown_names_answer_in_the_protocols_shape(client):
    too_big = client.post("/v2/models/digit_odd/infer", content=b"x" * (10 * 1024 * 1024 + 1))
    assert too_big.status_code == 413 and set(too_big.json()) == {"error"}
    compressed = _post(client, {"inputs": []}, {"Content-Encoding": "gzip"})
    assert compressed.status_code == 415 and set(compressed.json()) == {"error"}
    identity = _post(
        client, {"inputs": [{**PIXELS, "data": [0] * 784}]}, {"Content-Encoding": "Identity"}
    )  # encoding names ignore case
    assert identity.status_code == 200, identity.text
    for path in ("/v2/models/nope/infer", "/v2/models/digit_odd/versions/9/infer"):
        r = client.post(path, json={"inputs": []})
        assert r.status_code == 404 and "error" in r.json()
    no_label = client.get("/v2/models/digit_odd/versions/x")  # a label nobody set
    assert no_label.status_code == 404 and "label" in no_label.json()["error"]
    not_a_version = client.get("/v2/models/digit_odd/versions/X!")
    assert not_a_version.status_code == 400 and "version" in not_a_version.json()["error"]
    missing = client.get("/v2/models/nope/ready").json()["error"]
    assert missing.startswith(
        "no model named 'nope' (served: cifar10, cifar10_resnet, digit_odd, digit_odd_plus)"
    )
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}


def test_a_batch_client_sends_1024_images_in_one_request(triton_client, client):
    """The per-request limit is the model's maximum batch size, which Triton's model
    configuration advertises: 1,024 digits in one binary request are one answer."""
    config = triton_client.get_model_config("digit_odd")
    assert config["max_batch_size"] == 1024
    assert config["input"][0] == {"name": "image", "data_type": "TYPE_FP32", "dims": [28, 28, 1]}
    pixels = np.random.default_rng(3).random((1024, 28, 28, 1), np.float32)
    tensor = triton.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    result = triton_client.infer("digit_odd", [tensor])
    digits = result.as_numpy("digit")
    assert digits.shape == (1024, 10)
    alone = client.post(
        "/v2/models/digit_odd/infer",
        json=oip_fp32(pixels[700:701]),
    ).json()["outputs"]
    one = next(o for o in alone if o["name"] == "digit")["data"]
    np.testing.assert_allclose(digits[700], one, atol=1e-5)  # image 700 is image 700's answer


def test_a_model_advertises_a_smaller_batch_and_holds_to_it(triton_client, client):
    # the bundled ResNet's metadata says 256: a 1,024-image call held its thread for 1.2 s
    assert triton_client.get_model_config("cifar10_resnet", "3")["max_batch_size"] == 256
    pixels = np.zeros((257, 32, 32, 3), np.float32)
    tensor = triton.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    with pytest.raises(InferenceServerException, match="257 images in one request; send 1 to 256"):
        triton_client.infer("cifar10_resnet", [tensor])
    tensor = triton.InferInput("image", [256, 32, 32, 3], "FP32")
    tensor.set_data_from_numpy(pixels[:256], binary_data=True)
    assert triton_client.infer("cifar10_resnet", [tensor]).as_numpy("class").shape == (256, 10)
