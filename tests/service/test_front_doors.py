"""One server, three front doors: requests from the native API, the Open Inference Protocol and
TF Serving's REST API meet in the same batch and are counted under their own protocol."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.settings import BatchPolicy
from tests.service.conftest import make_client, oip_fp32
from tests.service.handwriting import draw_digit
from tests.service.test_metrics import samples, value

PIXELS = np.zeros((1, 28, 28, 1), np.float32)


def _jpeg() -> bytes:
    """A file that /predict decodes with Pillow, so it joins the pixel batches."""
    out = io.BytesIO()
    draw_digit(4).save(out, "JPEG")
    return out.getvalue()


def test_requests_of_every_api_share_a_batch_and_are_labelled_by_protocol(models_dir):
    policy = BatchPolicy(max_batch_size=64, max_delay_ms=1000)  # long enough to gather all
    requests = {
        "native": lambda c: c.post("/predict", files={"file": ("d.jpg", _jpeg())}),
        "oip_v2": lambda c: c.post(
            "/v2/models/digit_odd/infer",
            json=oip_fp32(PIXELS),
        ),
        "tfserving_v1": lambda c: c.post(
            "/v1/models/digit_odd:predict", json={"instances": PIXELS.tolist()}
        ),
    }
    with make_client(model_dir=models_dir, batching_overrides={"digit_odd": policy}) as client:
        before = samples(client)
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda send: send(client), requests.values()))
        after = samples(client)
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("cnn_serve_batch_size_count", model="digit_odd") == 1  # one model call
    assert grew("cnn_serve_batch_size_sum", model="digit_odd") == 3  # for all three
    for protocol in requests:
        assert (
            grew("cnn_serve_requests_total", protocol=protocol, method="POST", status="200") == 1
        ), protocol


def test_every_operation_is_documented_under_its_apis_tag(client):
    spec = client.get("/openapi.json").json()
    declared = [tag["name"] for tag in spec["tags"]]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            (tag,) = operation["tags"]
            assert tag in declared, (method, path)
            if path.startswith("/v2"):
                assert tag == "Open Inference Protocol (v2)", path
            elif path.startswith("/v1/"):
                assert tag == "TensorFlow Serving REST API (v1)", path
            else:
                assert tag in ("inference", "models", "health"), path


def _png() -> bytes:
    out = io.BytesIO()
    draw_digit(7).save(out, "PNG")
    return out.getvalue()


def test_every_api_refuses_a_model_input_by_the_same_rules(models_dir):
    # one rule (service.model_input), three wire formats: the count, the pixels' finiteness
    png = _png()
    b64 = base64.b64encode(png).decode()
    nan = np.full((1, 28, 28, 1), np.nan, np.float32)
    too_many = {
        "native": lambda c: c.post("/predict", files=[("file", ("d.png", png))] * 3),
        "oip_v2": lambda c: c.post(
            "/v2/models/digit_odd/infer",
            json={
                "inputs": [
                    {"name": "image_bytes", "shape": [3], "datatype": "BYTES", "data": [b64] * 3}
                ]
            },
        ),
        "tfserving_v1": lambda c: c.post(
            "/v1/models/digit_odd:predict", json={"instances": [{"b64": b64}] * 3}
        ),
    }
    header = (
        b'{"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", '
        b'"parameters": {"binary_data_size": 3136}}]}'
    )
    not_finite = {
        "oip_v2": lambda c: c.post(
            "/v2/models/digit_odd/infer",
            content=header + nan.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        ),
        "tfserving_v1": lambda c: c.post(
            "/v1/models/digit_odd:predict", json={"instances": [[[[1e39]] * 28] * 28]}
        ),
    }
    with make_client(model_dir=models_dir, max_images_per_request=2) as client:
        counted = {api: send(client) for api, send in too_many.items()}
        finite = {api: send(client) for api, send in not_finite.items()}
    assert counted["native"].status_code == 422
    assert counted["native"].json()["error"]["message"] == "3 images in one request; send 1 to 2"
    for api in ("oip_v2", "tfserving_v1"):
        assert counted[api].status_code == 400
        assert counted[api].json() == {"error": "3 images in one request; send 1 to 2"}
        assert finite[api].status_code == 400, finite[api].text
        assert "NaN or infinite values" in finite[api].json()["error"]
