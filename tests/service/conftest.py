"""An app over the committed models, spoken to through HTTP as a client would."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.model import ServedModel
from service.settings import Settings


@pytest.fixture(scope="session")
def settings(models_dir) -> Settings:
    return Settings(model_dir=models_dir, device="cpu")


@pytest.fixture(scope="session")
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def digit_odd_model(models_dir) -> ServedModel:
    """The committed digit_odd model, loaded and warmed on the CPU."""
    path = max(
        (p for p in (models_dir / "digit_odd").iterdir() if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    model = ServedModel("digit_odd", int(path.name), path, "/device:CPU:0")
    model.load()
    return model


def oip_fp32(pixels: np.ndarray, name: str = "image") -> dict:
    """An OIP JSON inference request sending ``pixels`` as its one FP32 input, flat."""
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": pixels.ravel().tolist(),
            }
        ]
    }


def make_client(**overrides) -> TestClient:
    """A fresh app with its own settings; use as a context manager."""
    return TestClient(
        create_app(Settings(device="cpu", **overrides)), raise_server_exceptions=False
    )


ADMIN_KEY = "admin-test-key-0123456789"


def admin_client(**overrides) -> TestClient:
    """:func:`make_client` with model control on, speaking with an admin key."""
    settings = Settings(device="cpu", model_control="explicit", admin_keys=ADMIN_KEY, **overrides)
    return TestClient(
        create_app(settings), raise_server_exceptions=False, headers={"X-API-Key": ADMIN_KEY}
    )


@contextmanager
def serving(app):
    """``app`` served by uvicorn on a free local port in a thread; yields "host:port"."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    started = threading.Event()
    startup = server.startup

    async def startup_then_signal(sockets=None) -> None:
        try:
            await startup(sockets)
        finally:
            started.set()

    server.startup = startup_then_signal
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert started.wait(60) and server.started, "server did not start"
    try:
        yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_url(settings):
    """The app on a real socket, for clients that need one (tritonclient, browsers)."""
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
def server_url(live_url) -> str:
    return f"http://{live_url}"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(server_url):
    """A headless Chromium page that fails the test if it reaches beyond the service
    (requests a same-origin CSP blocked count as kept in)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        foreign: dict[str, str] = {}  # attempted requests off the service -> how they ended
        local = (server_url, "data:", "blob:")
        page.on("request", lambda r: r.url.startswith(local) or foreign.setdefault(r.url, "sent"))
        page.on(
            "requestfailed",
            lambda r: r.url in foreign and foreign.update({r.url: r.failure or "failed"}),
        )
        yield page
        browser.close()
        leaked = {url: end for url, end in foreign.items() if end != "csp"}  # blocked by our CSP
        assert not leaked, f"the page reached outside the service: {leaked}"


class Spawned:
    """A real ``cnn-serve`` process: its output goes to ``log`` line by line, and a test can
    wait for a line instead of sleeping."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit and the last of the output; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout)
        self._copier.join(timeout)
        return status

    def _copy(self) -> None:
        with self.log.open("wb", buffering=0) as out:
            for line in self.proc.stdout:
                out.write(line)
                with self._changed:
                    self._lines.append(line.decode(errors="replace"))
                    self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # the end: nothing more will come
            self._changed.notify_all()

    def count(self, text: str) -> int:
        """Lines of its output so far that contain ``text``."""
        with self._changed:
            return sum(text in line for line in self._lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> bool:
        """Until ``count`` lines of its output contain ``text``; False if it ends first or
        the timeout passes."""

        def seen() -> bool:
            return sum(text in line for line in self._lines) >= count

        with self._changed:
            self._changed.wait_for(lambda: seen() or self._lines[-1:] == [""], timeout)
            return seen()


def spawn_server(log: Path, models_dir: Path, own_group: bool = False, **env: str) -> Spawned:
    """The real ``cnn-serve`` process on a free port with ``CNN_SERVE_*`` overrides ``env``,
    its output in ``log``; returns once it says it is listening. ``own_group``: in a process
    group of its own, as a terminal runs a command (a signal to the group reaches every
    process it started)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    variables = {
        **os.environ,
        "CNN_SERVE_MODEL_DIR": str(models_dir),
        "CNN_SERVE_DEVICE": "cpu",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "--port", str(port)],
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0 if own_group else None,
    )
    server = Spawned(proc, port, log)
    if server.wait_for("running on http://") and proc.poll() is None:
        return server
    proc.kill()
    pytest.fail("cnn-serve did not start listening:\n" + log.read_text())
