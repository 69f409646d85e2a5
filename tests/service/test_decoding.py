"""Uploads decoded on worker processes (the default): the same answers as on threads, a
client's broken file still a 400, and a dead worker costs a 503, not the service."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from tests.service.conftest import make_client, spawn_server
from tests.service.handwriting import draw_digit, encode
from training.quiet_tf import TF_FREE_PROCESS

PHOTOS = [
    (
        f"{d}.jpg",
        encode(draw_digit(d, canvas=(900, 700), box=(300, 200, 300), mode="RGB"), "JPEG"),
        "image/jpeg",
    )
    for d in range(10)
]


@pytest.fixture(scope="module")
def workers(models_dir):
    with make_client(model_dir=models_dir, decode_processes=2) as client:
        yield client


def _predict(client, files):
    return client.post("/predict", files=[("file", f) for f in files])


def test_photos_are_read_as_on_threads(workers, client):
    on_workers, on_threads = _predict(workers, PHOTOS), _predict(client, PHOTOS)
    assert on_workers.status_code == on_threads.status_code == 200, on_workers.text
    predictions = on_workers.json()["predictions"]
    assert [p["outputs"]["digit"]["label"] for p in predictions] == [str(d) for d in range(10)]
    assert predictions == on_threads.json()["predictions"]


def test_a_photo_that_fails_to_decode_in_a_worker_is_the_clients_error(workers):
    name, jpeg, kind = PHOTOS[3]
    r = _predict(workers, [(name, jpeg[: len(jpeg) // 3], kind)])  # its header is whole
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_image"


def test_a_killed_worker_costs_a_503_then_fresh_workers_serve(workers):
    assert _predict(workers, PHOTOS[:1]).status_code == 200  # the workers are up
    for worker in multiprocessing.active_children():
        if worker.name.startswith(TF_FREE_PROCESS):
            os.kill(worker.pid, signal.SIGKILL)
    statuses, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline and 200 not in statuses:
        statuses.append(_predict(workers, PHOTOS[:1]).status_code)
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert set(statuses) == {503, 200}


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (the decode workers and multiprocessing's tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_the_workers_end_with_the_server(tmp_path, models_dir, stop):
    """Stopped, the server stops its workers cleanly; killed, they end by themselves, and
    nothing is left behind either way."""
    server = spawn_server(
        tmp_path / "serve.log",
        models_dir,
        CNN_SERVE_DECODE_PROCESSES="1",
        CNN_SERVE_DRAIN_SECONDS="0",
    )
    workers = _children(server.proc.pid)
    assert len(workers) >= 2  # a decode worker and the resource tracker
    if stop == "SIGTERM":
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises it once done
        assert server.count("Application shutdown complete")
        assert not server.count("leaked")  # the tracker's warning when a pool is left open
    else:
        server.proc.kill()
        server.proc.wait(30)
    assert _gone(workers, 10), _children(1)
