"""The app on real sockets with its gRPC front door on, for the real gRPC clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from service.app import create_app
from service.settings import BatchPolicy, Settings
from tests.service.conftest import serving

# digit_odd_plus gathers for a while, so requests sent together share one model call
GATHERING = BatchPolicy(max_batch_size=64, max_delay_ms=1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    app: object
    http: str  # host:port
    grpc: str  # host:port


@contextmanager
def grpc_serving(models_dir, **overrides) -> Iterator[Served]:
    """An app with gRPC on a free port, served by uvicorn in a thread."""
    port = free_port()
    settings = Settings(model_dir=models_dir, device="cpu", grpc_port=port, **overrides)
    app = create_app(settings)
    with serving(app) as http:
        yield Served(app, http, f"127.0.0.1:{port}")


@pytest.fixture(scope="session")
def served(models_dir):
    with grpc_serving(
        models_dir,
        batching_overrides={"digit_odd_plus": GATHERING},
        version_labels={"digit_odd": {"stable": 1}},
    ) as served:
        yield served


@pytest.fixture(scope="session")
def triton(served):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(served.grpc)
    yield client
    client.close()
