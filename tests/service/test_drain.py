"""Graceful drain of the real ``cnn-serve`` process: SIGTERM while 8 keep-alive clients have
requests in flight -> readiness 503 at once, every request answered (each client is told
``Connection: close`` and leaves, as a load balancer would move it), new connections still
served during the drain, exit within the drain + 10 s."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time

from tests.service.conftest import spawn_server
from tests.service.handwriting import draw_digit, encode

DRAIN_S = 2.0
CLIENTS = 8
BOUNDARY = "drainboundary"
BODY = (
    (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode()
    + encode(draw_digit(7))
    + f"\r\n--{BOUNDARY}--\r\n".encode()
)


def _client(
    port: int,
    stop: threading.Event,
    outcomes: list,
    told_to_leave: list,
    answered: threading.Semaphore,
) -> None:
    """POST /predict over one keep-alive connection until told ``Connection: close`` (the
    drain), recording each answer's status or how a request failed; ``answered`` is released
    after the first answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    first = True
    while not stop.is_set():
        try:
            conn.request(
                "POST",
                "/predict",
                BODY,
                {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
            response = conn.getresponse()
            response.read()
            outcomes.append(response.status)
            if first:
                answered.release()
                first = False
        except (OSError, http.client.HTTPException) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
            return
        if response.getheader("connection", "").lower() == "close":
            told_to_leave.append(True)
            conn.close()
            return


def _predict_on_a_new_connection(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST", "/predict", BODY, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    status = conn.getresponse().status
    conn.close()
    return status


def _ready_status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health/ready")
    status = conn.getresponse().status
    conn.close()
    return status


def test_sigterm_drains_without_failing_a_request(tmp_path, models_dir):
    server = spawn_server(tmp_path / "server.log", models_dir, CNN_SERVE_DRAIN_SECONDS=str(DRAIN_S))
    proc, port = server.proc, server.port
    stop, outcomes, left, answered = threading.Event(), [], [], threading.Semaphore(0)
    clients = [
        threading.Thread(target=_client, args=(port, stop, outcomes, left, answered))
        for _ in range(CLIENTS)
    ]
    try:
        for client in clients:
            client.start()
        for _ in clients:  # every client has a keep-alive connection and an answer
            assert answered.acquire(timeout=30)
        assert _ready_status(port) == 200 and not left
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert server.wait_for("draining for", timeout=10)
        assert _ready_status(port) == 503  # readiness drops at once ...
        assert _predict_on_a_new_connection(port) == 200  # ... while it still serves
        for client in clients:
            client.join(10)
        proc.wait(DRAIN_S + 10)
        exited_after = time.monotonic() - signalled
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        for client in clients:
            client.join(30)
    failures = [o for o in outcomes if o != 200]
    assert not failures, failures
    # every client answered before the signal, then was told to leave by a later answer
    assert len(outcomes) >= 2 * CLIENTS and len(left) == CLIENTS
    assert DRAIN_S <= exited_after <= DRAIN_S + 10
    log = (tmp_path / "server.log").read_text()
    assert "draining for 2 s" in log


def test_ctrl_c_stops_every_process_without_a_traceback(tmp_path, models_dir):
    """Ctrl-C in a terminal sends SIGINT to the whole process group: the server, its decode
    workers. The server drains and exits; no process prints a traceback (before: two
    KeyboardInterrupt tracebacks, one from each decode worker)."""
    server = spawn_server(
        tmp_path / "server.log",
        models_dir,
        own_group=True,
        CNN_SERVE_DRAIN_SECONDS="0.5",
        CNN_SERVE_DECODE_PROCESSES="2",
    )
    assert _predict_on_a_new_connection(server.port) == 200
    signalled = time.monotonic()
    os.killpg(server.proc.pid, signal.SIGINT)
    try:
        server.proc.wait(30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    exited_after = time.monotonic() - signalled
    server.wait_for("never printed", timeout=10)  # until every process has closed the output
    log = (tmp_path / "server.log").read_text()
    assert "draining for 0.5 s" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert server.proc.returncode == 0 and exited_after <= 0.5 + 10
