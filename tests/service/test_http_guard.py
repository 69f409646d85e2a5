"""The real server (``cnn-serve``: uvicorn with the guarded protocol, then the body guard)
departing clients, spoken to over raw sockets with short limits."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from tests.service.conftest import spawn_server
from tests.service.handwriting import draw_digit, encode

LIMITS = {
    "CNN_SERVE_HEADER_TIMEOUT_S": "1",
    "CNN_SERVE_BODY_IDLE_TIMEOUT_S": "1",
    "CNN_SERVE_BODY_TIMEOUT_S": "3",
    "CNN_SERVE_MAX_HEADER_BYTES": "8192",
    "CNN_SERVE_KEEPALIVE_TIMEOUT_S": "1",
}
DIGIT = encode(draw_digit(7))


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    """``cnn-serve`` on a free port, with short limits."""
    spawned = spawn_server(tmp_path_factory.mktemp("server") / "server.log", models_dir, **LIMITS)
    try:
        yield spawned
    finally:
        spawned.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - start


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "testboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="d.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _head(length: int, ctype: str) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_complete_request_is_answered(server):
    body, ctype = _multipart(DIGIT)
    with _connect(server.port) as sock:
        sock.sendall(
            _head(len(body), ctype).replace(b"Host: x", b"Host: x\r\nConnection: close") + body
        )
        reply, _ = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200") and b'"label":"7"' in reply


def _dribble(sock: socket.socket, pieces, every_s: float) -> tuple[bytes, float]:
    """Send ``pieces`` one every ``every_s`` until the server answers or closes; everything
    it sent, and the time from the first piece until it closed."""
    start, reply = time.monotonic(), b""
    sock.settimeout(every_s)
    for piece in pieces:
        try:
            sock.sendall(piece)
            reply = sock.recv(65536)
            break
        except TimeoutError:
            continue
        except OSError:
            break
    sock.settimeout(10)
    rest, _ = _read_until_closed(sock)
    return reply + rest, time.monotonic() - start


def test_slowloris_headers_are_cut_off_at_the_header_timeout(server):
    with _connect(server.port) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        lines = (f"X-Slow-{i}: {i}\r\n".encode() for i in range(40))  # 8 s at 0.2 s each
        reply, elapsed = _dribble(sock, lines, 0.2)
    assert reply.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in reply
    assert elapsed < 3  # the limit is 1 s


def test_a_silent_connection_is_closed(server):
    with _connect(server.port) as sock:
        _, elapsed = _read_until_closed(sock)
    assert elapsed < 3


def test_oversized_headers_are_refused(server):
    with _connect(server.port) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(64):  # 64 x 1 KiB of headers against a limit of 8 KiB
                sock.sendall(b"X-Big: " + b"a" * 1017 + b"\r\n")
        except OSError:  # the server may close while we still send
            pass
        reply, _ = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431")


def test_a_body_shorter_than_its_content_length_times_out(server):
    body, ctype = _multipart(DIGIT)
    with _connect(server.port) as sock:
        sock.sendall(_head(len(body), ctype) + body[:100])
        reply, elapsed = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in reply
    assert elapsed < 3  # idle limit 1 s


def test_a_trickling_body_is_cut_off_at_the_body_timeout(server):
    body, ctype = _multipart(DIGIT)
    with _connect(server.port) as sock:
        sock.sendall(_head(len(body), ctype))
        chunks = (body[i : i + 20] for i in range(0, len(body), 20))  # never idle for 1 s
        reply, elapsed = _dribble(sock, chunks, 0.5)
    assert reply.startswith(b"HTTP/1.1 408")
    assert 2.5 < elapsed < 5  # the whole body had 3 s


def test_an_idle_keep_alive_connection_is_closed(server):
    with _connect(server.port) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        reply, elapsed = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200") and elapsed < 3  # keep-alive limit 1 s


def test_clients_leaving_mid_upload_are_not_server_errors(server):
    port, log = server.port, server.log
    logged_before = len(log.read_text())
    gone_before = server.count('"status":499')
    body, ctype = _multipart(encode(draw_digit(3, canvas=(800, 800)), "BMP"))
    for route in ("/predict", "/models/digit_odd/feature-maps"):
        for _ in range(3):
            with _connect(port) as sock:
                sock.sendall(
                    _head(len(body), ctype).replace(b"/predict", route.encode())
                    + body[: len(body) // 2]
                )
    # the server notices each closed socket and logs the request (499: the client left)
    assert server.wait_for('"status":499', count=gone_before + 6, timeout=30), log.read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    text = log.read_text()[logged_before:]
    assert "ERROR" not in text and "Traceback" not in text, text
    assert 'status="500"' not in metrics
