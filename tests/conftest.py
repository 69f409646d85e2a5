"""Shared fixtures: the committed model repository and quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the apps tests build serve gRPC only when a test asks, on a port of its own: many apps on
# the default port would share it (and answer each other's clients)
os.environ["CNN_SERVE_GRPC_PORT"] = "0"
# nor decode worker processes (a second each to start, for hundreds of apps): tests that need
# them ask (tests/service/test_decoding.py)
os.environ["CNN_SERVE_DECODE_PROCESSES"] = "0"

from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"


def committed_versions(name: str) -> list[Path]:
    """The version directories of a committed model, oldest first."""
    return sorted(
        (p for p in (MODELS / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS
