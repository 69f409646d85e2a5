"""Activations -> statistics and PNG pictures: conv/pool outputs as a grid of their channels,
vectors as a strip; grayscale with the value range stated next to the picture."""

from __future__ import annotations

import base64
import io
import math
from typing import Literal

import numpy as np
from PIL import Image

from service.schemas import ActivationStats, ColorScale, Grid, LayerImage

Scaling = Literal["per_layer", "per_channel"]
STRIP_WIDTH = 64  # long vectors wrap into rows of this many cells


def stats(activation: np.ndarray) -> ActivationStats:
    a = activation.astype(np.float64, copy=False)
    return ActivationStats(
        min=float(a.min()),
        max=float(a.max()),
        mean=float(a.mean()),
        std=float(a.std()),
        zero_fraction=float(np.mean(a == 0)),
    )


def _normalise(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """low..high -> 0..255; a constant (no range) is mid-gray, not black: the picture shows
    that there is a value, its range label says which."""
    span = np.asarray(high, np.float64) - np.asarray(low, np.float64)
    scaled = (values - low) / np.maximum(span, 1e-12) * 255.0 + 0.5
    return np.where(span > 1e-12, np.clip(scaled, 0, 255), 128).astype(np.uint8)


def _grid(activation: np.ndarray, scaling: Scaling) -> tuple[np.ndarray, str, ColorScale, Grid]:
    """[H, W, C] -> one picture of C tiles separated by 1-pixel gaps."""
    height, width, channels = activation.shape
    lows, highs = activation.min(axis=(0, 1)), activation.max(axis=(0, 1))
    ranges = [[float(a), float(b)] for a, b in zip(lows, highs)]
    if scaling == "per_channel":
        low, high = lows, highs
    else:
        low, high = lows.min(), highs.max()
    scale = ColorScale(
        scaling=scaling, range=[float(lows.min()), float(highs.max())], channel_ranges=ranges
    )
    tiles = _normalise(activation, low, high)
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    canvas = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), 32, np.uint8)
    for c in range(channels):
        r, k = divmod(c, cols)
        canvas[
            r * (height + 1) : r * (height + 1) + height, k * (width + 1) : k * (width + 1) + width
        ] = tiles[..., c]
    layout = f"{cols}x{rows} grid of {channels} channels, {width}x{height} each"
    return canvas, layout, scale, Grid(cols=cols, rows=rows, tile_width=width, tile_height=height)


def _strip(activation: np.ndarray) -> tuple[np.ndarray, str, ColorScale]:
    """[N] -> rows of up to STRIP_WIDTH cells (one row when N fits), unit index order."""
    values = activation.reshape(-1)
    low, high = float(values.min()), float(values.max())
    cols = min(len(values), STRIP_WIDTH)
    rows = math.ceil(len(values) / cols)
    padded = np.full(rows * cols, low, np.float64)
    padded[: len(values)] = values
    pixels = _normalise(padded.reshape(rows, cols), low, high)
    layout = f"strip of {len(values)} units" + (f", {cols} per row" if rows > 1 else "")
    return pixels, layout, ColorScale(scaling="per_layer", range=[low, high])


def render(activation: np.ndarray, scaling: Scaling = "per_layer") -> LayerImage:
    """One image's activation of one layer (no batch axis) as a PNG with its colour scale."""
    grid = None
    if activation.ndim == 3:
        pixels, layout, scale, grid = _grid(activation, scaling)
    else:
        pixels, layout, scale = _strip(activation)
    return LayerImage(
        png_base64=_png(Image.fromarray(pixels, "L")),
        width=pixels.shape[1],
        height=pixels.shape[0],
        layout=layout,
        grid=grid,
        color_scale=scale,
    )


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=False, compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# a blue -> cyan -> yellow -> red ramp (like "jet"), for heatmaps over a gray or colour image
HEAT_STOPS = np.array(
    [[0, 0, 128], [0, 96, 255], [0, 224, 255], [255, 224, 0], [255, 64, 0], [160, 0, 0]], np.float32
)
OVERLAY_SIDE = 224  # the overlay is drawn at least this large: heatmaps are smooth
OVERLAY_ALPHA = 0.45


def overlay(image: np.ndarray, heatmap: np.ndarray) -> str:
    """The model's input [H, W, C] in [0, 1] (nearest-neighbour enlarged) with ``heatmap``
    [H, W] in [0, 1] (bilinear) blended over it in colour; a base64 PNG."""
    height, width = heatmap.shape
    scale = max(1, math.ceil(OVERLAY_SIDE / max(height, width)))
    size = (width * scale, height * scale)
    picture = Image.fromarray(
        (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8).squeeze(-1)
        if image.shape[-1] == 1
        else (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    )
    base = np.asarray(picture.convert("RGB").resize(size, Image.Resampling.NEAREST), np.float32)
    heat = Image.fromarray(heatmap.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR)
    position = np.clip(np.asarray(heat), 0, 1) * (len(HEAT_STOPS) - 1)
    low = np.minimum(position.astype(int), len(HEAT_STOPS) - 2)
    frac = (position - low)[..., None]
    colours = HEAT_STOPS[low] * (1 - frac) + HEAT_STOPS[low + 1] * frac
    blended = base * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA
    return _png(Image.fromarray((blended + 0.5).astype(np.uint8), "RGB"))


def to_npz(activations: dict[str, np.ndarray]) -> bytes:
    """Raw float activations keyed by layer name, batch axis first."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **activations)  # type: ignore[arg-type]  # numpy's stub: **kwds
    return buf.getvalue()
