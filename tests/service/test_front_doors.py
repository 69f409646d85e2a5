"""One server, three front doors: requests from the native API, the Open Inference Protocol and
TF Serving's REST API meet in the same batch and are counted under their own protocol."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.settings import BatchPolicy
from tests.service.conftest import make_client
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
        "oip_v2": lambda c: c.post("/v2/models/digit_odd/infer", json={"inputs": [{
            "name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32",
            "data": PIXELS.ravel().tolist()}]}),
        "tfserving_v1": lambda c: c.post("/v1/models/digit_odd:predict",
                                         json={"instances": PIXELS.tolist()}),
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
        assert grew("cnn_serve_requests_total", protocol=protocol, method="POST",
                    status="200") == 1, protocol


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
