"""Activations -> statistics and PNG pictures: conv/pool outputs as a grid of their channels,
vectors as a strip; grayscale with the value range stated next to the picture."""

from __future__ import annotations

import base64
import io
import math
from typing import Literal

import numpy as np
from PIL import Image

from service.schemas import ActivationStats, ColorScale, LayerImage

Scaling = Literal["per_layer", "per_channel"]
STRIP_WIDTH = 64  # long vectors wrap into rows of this many cells


def stats(activation: np.ndarray) -> ActivationStats:
    a = activation.astype(np.float64, copy=False)
    return ActivationStats(min=float(a.min()), max=float(a.max()), mean=float(a.mean()),
                           std=float(a.std()), zero_fraction=float(np.mean(a == 0)))


def _normalise(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float
               ) -> np.ndarray:
    span = np.maximum(np.asarray(high) - np.asarray(low), 1e-12)
    return np.clip((values - low) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _grid(activation: np.ndarray, scaling: Scaling) -> tuple[np.ndarray, str, ColorScale]:
    """[H, W, C] -> one picture of C tiles separated by 1-pixel gaps."""
    height, width, channels = activation.shape
    if scaling == "per_channel":
        low, high = activation.min(axis=(0, 1)), activation.max(axis=(0, 1))
        scale = ColorScale(scaling=scaling, range=[float(low.min()), float(high.max())],
                           channel_ranges=[[float(a), float(b)] for a, b in zip(low, high)])
    else:
        low, high = activation.min(), activation.max()
        scale = ColorScale(scaling=scaling, range=[float(low), float(high)])
    tiles = _normalise(activation, low, high)
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    canvas = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), 32, np.uint8)
    for c in range(channels):
        r, k = divmod(c, cols)
        canvas[r * (height + 1):r * (height + 1) + height,
               k * (width + 1):k * (width + 1) + width] = tiles[..., c]
    layout = f"{cols}x{rows} grid of {channels} channels, {width}x{height} each"
    return canvas, layout, scale


def _strip(activation: np.ndarray) -> tuple[np.ndarray, str, ColorScale]:
    """[N] -> rows of up to STRIP_WIDTH cells (one row when N fits), unit index order."""
    values = activation.reshape(-1)
    low, high = float(values.min()), float(values.max())
    cols = min(len(values), STRIP_WIDTH)
    rows = math.ceil(len(values) / cols)
    padded = np.full(rows * cols, low, np.float64)
    padded[:len(values)] = values
    pixels = _normalise(padded.reshape(rows, cols), low, high)
    layout = f"strip of {len(values)} units" + (f", {cols} per row" if rows > 1 else "")
    return pixels, layout, ColorScale(scaling="per_layer", range=[low, high])


def render(activation: np.ndarray, scaling: Scaling = "per_layer") -> LayerImage:
    """One image's activation of one layer (no batch axis) as a PNG with its colour scale."""
    if activation.ndim == 3:
        pixels, layout, scale = _grid(activation, scaling)
    else:
        pixels, layout, scale = _strip(activation)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG", optimize=False, compress_level=1)
    return LayerImage(png_base64=base64.b64encode(buf.getvalue()).decode("ascii"),
                      width=pixels.shape[1], height=pixels.shape[0], layout=layout,
                      color_scale=scale)


def to_npz(activations: dict[str, np.ndarray]) -> bytes:
    """Raw float activations keyed by layer name, batch axis first."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **activations)
    return buf.getvalue()
