"""An app over the committed models, spoken to through HTTP as a client would."""

from __future__ import annotations

import threading
import time

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
    path = max((p for p in (models_dir / "digit_odd").iterdir() if p.name.isdigit()),
               key=lambda p: int(p.name))
    model = ServedModel("digit_odd", int(path.name), path, "/device:CPU:0")
    model.load()
    return model


def make_client(**overrides) -> TestClient:
    """A fresh app with its own settings; use as a context manager."""
    return TestClient(create_app(Settings(device="cpu", **overrides)),
                      raise_server_exceptions=False)


@pytest.fixture(scope="session")
def live_url(settings):
    """The app served by uvicorn on a free local port (for clients that need a real socket,
    e.g. tritonclient); yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
