"""Every bad request gets a clear 4xx in the one error shape; nothing answers 500."""

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import make_client
from tests.service.handwriting import draw_digit, encode

PNG = encode(draw_digit(3))


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status and body["error"]["code"] == code
    return body["error"]["message"]


def test_empty_image(client):
    msg = _error(client.post("/predict", files={"file": ("a.png", b"", "image/png")}), 400,
                 "empty_image")
    assert "a.png" in msg


def test_undecodable_image(client):
    r = client.post("/predict", files={"file": ("a.jpg", b"\xff\xd8\xff garbage", "image/jpeg")})
    assert "not a decodable image" in _error(r, 400, "invalid_image")


def test_not_an_image_type(client):
    r = client.post("/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert "text/plain" in _error(r, 415, "unsupported_media_type")


def test_unknown_model_and_version(client):
    r = client.post("/predict", data={"model": "resnet"}, files={"file": ("a.png", PNG)})
    assert "resnet" in _error(r, 404, "model_not_found")
    r = client.post("/predict", data={"model": "digit_odd", "version": "999"},
                    files={"file": ("a.png", PNG)})
    assert "999" in _error(r, 404, "version_not_found")
    _error(client.get("/models/resnet"), 404, "model_not_found")
    _error(client.get("/models/digit_odd/versions/999"), 404, "version_not_found")


@pytest.mark.parametrize("field,value", [("top_k", "0"), ("top_k", "many"), ("version", "-1")])
def test_bad_parameters(client, field, value):
    r = client.post("/predict", data={field: value}, files={"file": ("a.png", PNG)})
    assert field in _error(r, 422, "invalid_parameter")


def test_missing_file(client):
    assert "file" in _error(client.post("/predict"), 422, "invalid_parameter")


def test_not_multipart(client):
    r = client.post("/predict", content=b'{"x": 1}', headers={"content-type": "application/json"})
    _error(r, 422, "invalid_parameter")


def test_too_many_pixels(client):
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")
    r = client.post("/predict", files={"file": ("bomb.png", bomb, "image/png")})
    assert "pixels" in _error(r, 413, "image_too_many_pixels")


def test_over_the_upload_limit_by_content_length(models_dir):
    with make_client(model_dir=models_dir, max_upload_bytes=50_000) as c:
        big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
        r = c.post("/predict", files={"file": ("big.bmp", encode(Image.fromarray(big), "BMP"))})
        assert "50,000" in _error(r, 413, "payload_too_large")
        assert c.post("/predict", files={"file": ("ok.png", PNG)}).status_code == 200


def test_over_the_upload_limit_when_streamed(models_dir):
    """No Content-Length (chunked): refused once the stream passes the limit."""
    with make_client(model_dir=models_dir, max_upload_bytes=50_000) as c:
        boundary = "xyz"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="big.bin"\r\nContent-Type: image/png\r\n\r\n').encode()

        def chunks():
            yield head
            for _ in range(20):
                yield b"\0" * 10_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/predict", content=chunks(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        _error(r, 413, "payload_too_large")


def test_unknown_layer(client):
    r = client.post("/models/digit_odd/feature-maps", data={"layers": "conv2d_layer,nope"},
                    files={"file": ("a.png", PNG)})
    assert "nope" in _error(r, 404, "layer_not_found")


def test_unknown_route_uses_the_same_shape(client):
    _error(client.get("/nowhere"), 404, "not_found")


def test_random_bytes_never_500(client):
    rng = np.random.default_rng(7)
    for n in (1, 10, 100, 5000):
        for ctype in ("image/png", "image/jpeg", "application/octet-stream"):
            blob = rng.integers(0, 256, n, np.uint8).tobytes()
            r = client.post("/predict", files={"file": ("x", blob, ctype)})
            assert r.status_code in (400, 415), r.text
    assert client.get("/health/ready").status_code == 200  # still serving
