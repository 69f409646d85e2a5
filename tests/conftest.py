"""Shared fixtures: the committed model repository and quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
