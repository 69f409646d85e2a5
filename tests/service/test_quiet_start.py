"""A normal start prints one line per model version and the listening addresses, nothing else:
no TensorFlow start-up notices ("failed call to cuInit" on a CPU machine), no retracing
warnings, no line twice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from tests.service.conftest import spawn_server
from tests.service.rpc.conftest import free_port


def test_a_normal_start_prints_the_models_and_the_addresses_only(tmp_path, models_dir):
    grpc_port = free_port()
    server = spawn_server(
        tmp_path / "server.log",
        models_dir,
        CNN_SERVE_DEVICE="auto",
        CNN_SERVE_GRPC_PORT=str(grpc_port),
    )
    server.stop()
    lines = (tmp_path / "server.log").read_text().splitlines()
    started = [
        json.loads(line)["message"]
        for line in lines[
            : lines.index(next(line for line in lines if "running on http://" in line)) + 1
        ]
    ]
    versions = sorted(
        f"{p.parent.name} v{p.name}" for p in models_dir.glob("*/*") if p.name.isdigit()
    )
    ready = [
        re.fullmatch(r"model (\S+ v\d+) ready on /device:CPU:0 in [\d.]+s", m) for m in started[:-2]
    ]
    assert all(ready), started
    assert sorted(m[1] for m in ready) == versions
    assert started[-2].startswith(f"gRPC on 127.0.0.1:{grpc_port} ")
    assert started[-1].startswith(f"Uvicorn running on http://127.0.0.1:{server.port}")


def test_debug_level_shows_what_a_normal_start_keeps_quiet(tmp_path, models_dir):
    spawn_server(
        tmp_path / "server.log", models_dir, CNN_SERVE_DEVICE="auto", CNN_SERVE_LOG_LEVEL="debug"
    ).stop()
    loggers = {
        json.loads(line)["logger"]
        for line in (tmp_path / "server.log").read_text().splitlines()
        if line.startswith("{")
    }
    assert {"tensorflow.native", "uvicorn.error", "cnn_serve"} <= loggers


def test_several_workers_and_their_decode_processes_start_quietly(tmp_path, models_dir):
    """uvicorn's workers are multiprocessing processes too: each still imports TensorFlow
    with its notices captured, and the decode processes never import it."""
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "CNN_SERVE_MODEL_DIR": str(models_dir),
        "CNN_SERVE_DECODE_PROCESSES": "1",
        "CNN_SERVE_GRPC_PORT": "0",
    }
    command = [sys.executable, "-m", "service.cli", "--port", str(free_port()), "--workers", "2"]
    last = f"model {max(p.parent.name for p in models_dir.glob('*/*') if p.name.isdigit())}"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count(last) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1)  # the decode processes start beside the models
    finally:
        proc.terminate()
        proc.wait(60)
    lines = log.read_text().splitlines()
    assert sum(last in line for line in lines) == 2, lines
    assert all(line.startswith("{") for line in lines), lines
