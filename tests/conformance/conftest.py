"""Triton Inference Server beside cnn-serve, each on real sockets, for the same requests.

Triton is PyTriton's ``tritonserver`` in its own virtualenv (``.triton-venv``, made from the
system's Python 3.11 by ``deploy/triton-venv.sh``; ``.ci/run`` makes it): PyTriton's Python
backend stub links the system's libpython and needs ``numpy<2``, so it cannot share the
project's environment. Without that venv the suite is skipped with a line saying how to get it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.conftest import MODELS
from tests.service.rpc.conftest import free_port, grpc_serving
from training.metadata import ModelMetadata

ROOT = Path(__file__).resolve().parents[2]
TRITON_PYTHON = Path(os.environ.get("CNN_SERVE_TRITON_PYTHON", ROOT / ".triton-venv/bin/python"))
MODEL = "digit_odd"
START_TIMEOUT_S = 180

pytestmark = pytest.mark.triton


@dataclass
class Server:
    http: str  # host:port
    grpc: str


def _spec() -> dict:
    meta = ModelMetadata.read(MODELS / MODEL / "1")
    return {
        "name": MODEL,
        "max_batch_size": Settings().max_images_per_request,
        "input": [meta.input.name, meta.input.shape],
        "outputs": [[o.name, o.units] for o in meta.outputs],
    }


@pytest.fixture(scope="session")
def triton() -> Iterator[Server]:
    if not TRITON_PYTHON.exists():
        pytest.skip(f"needs Triton's venv at {TRITON_PYTHON}: deploy/triton-venv.sh makes it")
    http_port, grpc_port = free_port(), free_port()
    peer = subprocess.Popen(
        [
            str(TRITON_PYTHON),
            str(ROOT / "bench" / "triton_peer.py"),
            json.dumps(_spec()),
            str(http_port),
            str(grpc_port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    try:
        _wait_ready(peer, server)
        yield server
    finally:
        peer.stdin.close()  # type: ignore[union-attr]
        try:
            peer.wait(30)
        except subprocess.TimeoutExpired:
            peer.kill()


def _wait_ready(peer: subprocess.Popen, server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if peer.poll() is not None:
            output = peer.stdout.read() if peer.stdout else ""  # type: ignore[union-attr]
            raise RuntimeError(f"Triton exited ({peer.returncode}):\n{output[-3000:]}")
        try:
            if httpx.get(f"http://{server.http}/v2/models/{MODEL}/ready", timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    peer.kill()
    raise RuntimeError(f"Triton did not serve {MODEL} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def ours(models_dir) -> Iterator[Server]:
    with grpc_serving(models_dir) as served:
        yield Server(served.http, served.grpc)


@pytest.fixture(scope="session")
def both(triton, ours) -> dict[str, Server]:
    return {"triton": triton, "cnn-serve": ours}
