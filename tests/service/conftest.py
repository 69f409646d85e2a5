"""An app over the committed models, spoken to through HTTP as a client would."""

from __future__ import annotations

import pytest
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
