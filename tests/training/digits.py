"""Tiny learnable digit data for training tests: a bright bar whose row is the label."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.datasets import Dataset


def bar_digits(n: int = 200, noise_seed: int | None = None) -> Dataset:
    labels = np.arange(n) % 10
    images = np.zeros((n, 28, 28, 1), np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    if noise_seed is not None:
        noise = np.random.default_rng(noise_seed).integers(0, 40, images.shape)
        images = np.clip(images + noise, 0, 255).astype(np.uint8)
    return Dataset("mnist", images, labels, [str(d) for d in range(10)], "npz", None, "test")


def bar_digits_npz(path: Path, n: int = 200, noise_seed: int | None = None) -> Path:
    """:func:`bar_digits` as a Keras ``mnist.npz`` (what ``cnn-train --data`` reads)."""
    data = bar_digits(n, noise_seed)
    np.savez(path, x_train=data.images[..., 0], y_train=data.labels)
    return Path(path)
