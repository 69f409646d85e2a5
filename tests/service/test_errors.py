"""Every bad request gets a clear 4xx in the one error shape; nothing answers 500."""

import io
import time

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
    msg = _error(
        client.post("/predict", files={"file": ("a.png", b"", "image/png")}), 400, "empty_image"
    )
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
    r = client.post(
        "/predict", data={"model": "digit_odd", "version": "999"}, files={"file": ("a.png", PNG)}
    )
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
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.bin"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()

        def chunks():
            yield head
            for _ in range(20):
                yield b"\0" * 10_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post(
            "/predict",
            content=chunks(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        _error(r, 413, "payload_too_large")


def test_unknown_layer(client):
    r = client.post(
        "/models/digit_odd/feature-maps",
        data={"layers": "conv2d_layer,nope"},
        files={"file": ("a.png", PNG)},
    )
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


def test_pixels_are_limited_per_request_before_anything_decodes(client):
    """32 images each under the per-image limit (6000x6000 RGBA, 36 MP), 1.15 gigapixels in
    all: refused from their headers alone."""
    big = encode(Image.new("RGBA", (6000, 6000)), "PNG")  # 140 KB each
    files = [("file", (f"{i}.png", big, "image/png")) for i in range(32)]
    start = time.monotonic()
    r = client.post("/predict", files=files)
    elapsed = time.monotonic() - start
    assert "1,152,000,000 pixels" in _error(r, 413, "image_too_many_pixels")
    assert elapsed < 1


def test_jpegs_count_the_pixels_they_decode_at_scale(models_dir):
    """Four 12-megapixel JPEG photos are 48 MP at full size, but the digit model decodes them
    at 1/8 scale: 0.75 MP, well within a 10 MP request budget."""
    photo = encode(
        draw_digit(4, canvas=(4000, 3000), box=(1500, 900, 1200), mode="RGB"), "JPEG", quality=80
    )
    with make_client(
        model_dir=models_dir, max_request_pixels=10_000_000, decode_pixels_budget=10_000_000
    ) as c:
        r = c.post(
            "/predict", files=[("file", (f"{i}.jpg", photo, "image/jpeg")) for i in range(4)]
        )
        assert r.status_code == 200, r.text
        assert [p["outputs"]["digit"]["label"] for p in r.json()["predictions"]] == ["4"] * 4
        as_png = encode(Image.open(io.BytesIO(photo)), "PNG", compress_level=1)
        r = c.post("/predict", files={"file": ("p.png", as_png, "image/png")})
        assert "12,000,000 pixels" in _error(r, 413, "image_too_many_pixels")


def test_unknown_query_parameters_and_fields_are_refused(client):
    """``?model=cifar10`` was once silently answered by the default model."""
    r = client.post("/predict?model=cifar10", files={"file": ("a.png", PNG)})
    assert "model" in _error(r, 422, "invalid_parameter")
    r = client.post("/predict", data={"modle": "cifar10"}, files={"file": ("a.png", PNG)})
    assert "modle" in _error(r, 422, "invalid_parameter")


def _raw(*parts: bytes) -> tuple[bytes, dict]:
    boundary = b"b0undary"
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + boundary + b"--\r\n", {
        "content-type": "multipart/form-data; boundary=b0undary"
    }


def _part(headers: str, data: bytes) -> bytes:
    return headers.encode("latin-1") + b"\r\n\r\n" + data


UPLOADS = {
    "part without a filename": _raw(_part('Content-Disposition: form-data; name="file"', PNG)),
    "non-UTF-8 filename": _raw(
        _part('Content-Disposition: form-data; name="file"; filename="\xe9\xff.png"', PNG)
    ),
    "no file part": _raw(_part('Content-Disposition: form-data; name="version"', b"1")),
    "unknown field": _raw(
        _part('Content-Disposition: form-data; name="file"; filename="a"', PNG),
        _part('Content-Disposition: form-data; name="x"', b"1"),
    ),
    "file under another name": _raw(
        _part('Content-Disposition: form-data; name="image"; filename="a.png"', PNG)
    ),
    "text field not UTF-8": _raw(
        _part('Content-Disposition: form-data; name="file"; filename="a"', PNG),
        _part('Content-Disposition: form-data; name="version"', b"\xff"),
    ),
    "empty file": _raw(_part('Content-Disposition: form-data; name="file"; filename="a"', b"")),
    "garbage file": _raw(
        _part('Content-Disposition: form-data; name="file"; filename="a"', b"\x00garbage")
    ),
    "bad version": _raw(
        _part('Content-Disposition: form-data; name="file"; filename="a"', PNG),
        _part('Content-Disposition: form-data; name="version"', b"zero"),
    ),
    "cut body": (
        _raw(_part('Content-Disposition: form-data; name="file"; filename="a"', PNG))[0][:-30],
        _raw()[1],
    ),
    "not multipart": (b'{"file": "x"}', {"content-type": "application/json"}),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_every_upload_route_answers_an_upload_alike(client, case):
    """One parser and one validation for every upload route."""
    body, headers = UPLOADS[case]
    answers = [
        client.post(url, content=body, headers=headers)
        for url in ("/predict", "/models/digit_odd/feature-maps")
    ]
    statuses = [r.status_code for r in answers]
    assert statuses[0] == statuses[1], [r.text for r in answers]
    if statuses[0] != 200:
        assert answers[0].json()["error"]["code"] == answers[1].json()["error"]["code"]
        assert statuses[0] < 500


def test_an_unexpected_error_is_a_500_that_closes_the_connection_cleanly(settings):
    """Should a bug ever raise, the client gets the error shape and ``Connection: close``,
    then an orderly end of the connection (not a reset of its keep-alive connection)."""
    import http.client
    import socket

    from service.app import create_app
    from tests.service.conftest import serving

    app = create_app(settings)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("a bug")

    with serving(app) as url:
        host, port = url.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive by default
            answer = b""
            while chunk := sock.recv(65536):  # to the end: an orderly close, no reset
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500") and b"connection: close" in head.lower()
        assert b'"internal_error"' in body and b"a bug" not in body
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/health/live")  # the server serves on
        assert conn.getresponse().status == 200
