"""The request gate calls ``POST /predict`` directly, past the framework; every answer must be
the one the framework's route gives (the route still serves it when CORS is configured)."""

from __future__ import annotations

import pytest

from service.middleware import RequestGate
from tests.service.conftest import make_client
from tests.service.handwriting import draw_digit, encode

PNG = encode(draw_digit(3))
JPEG = encode(draw_digit(8, canvas=(400, 300), box=(100, 50, 200), mode="RGB"), "JPEG")

# (name, request keyword arguments): answers and refusals of every kind
CASES = [
    ("png", {"files": [("file", ("d.png", PNG, "image/png"))]}),
    (
        "two files and top_k",
        {
            "files": [
                ("file", ("a.png", PNG, "image/png")),
                ("file", ("b.jpg", JPEG, "image/jpeg")),
            ],
            "data": {"top_k": "2"},
        },
    ),
    ("other model", {"files": [("file", ("d.png", PNG))], "data": {"model": "digit_odd_plus"}}),
    ("no file", {"data": {"model": "digit_odd"}}),
    ("unknown field", {"files": [("file", ("d.png", PNG))], "data": {"colour": "red"}}),
    ("query parameter", {"files": [("file", ("d.png", PNG))], "params": {"model": "digit_odd"}}),
    ("unknown model", {"files": [("file", ("d.png", PNG))], "data": {"model": "nope"}}),
    ("unknown version", {"files": [("file", ("d.png", PNG))], "data": {"version": "99"}}),
    ("bad top_k", {"files": [("file", ("d.png", PNG))], "data": {"top_k": "many"}}),
    ("not an image", {"files": [("file", ("d.png", b"hello", "image/png"))]}),
    ("truncated png", {"files": [("file", ("d.png", PNG[:60], "image/png"))]}),
    (
        "malformed multipart",
        {
            "content": b"--x\r\nContent-Disposition: form-data\r\n\r\nno end",
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
    ),
    ("json body", {"json": {"file": "d.png"}}),
]


def gate_of(client) -> RequestGate:
    layer = client.app.middleware_stack
    while not isinstance(layer, RequestGate):
        layer = layer.app
    return layer


@pytest.fixture(scope="module")
def framework(models_dir):
    with make_client(model_dir=models_dir, cors_origins=["http://a.example"]) as client:
        yield client


def test_predict_is_direct_unless_cors_sits_before_it(client, framework):
    assert list(gate_of(client).direct) == [("POST", "/predict")]
    assert gate_of(framework).direct == {}


def answer(client, kwargs: dict) -> tuple[int, str, dict]:
    r = client.post("/predict", **kwargs)
    body = r.json()
    body.pop("timings", None)
    return r.status_code, r.headers["content-type"], body


@pytest.mark.parametrize("kwargs", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_direct_route_answers_as_the_framework_route(client, framework, kwargs):
    direct = answer(client, kwargs)
    assert direct == answer(framework, kwargs)
    assert direct[0] != 500
