"""Digits drawn as a person writes them with a pen: strokes on paper, any size, anywhere.

Each digit is a few polylines in a unit box (x right, y down); ``draw_digit`` renders them
with a round pen onto a canvas, optionally on uneven, off-white paper.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, start: float = 0.0, turn: float = 1.0, n: int = 24
) -> list[tuple[float, float]]:
    angles = start + np.linspace(0, 2 * np.pi * turn, n)
    return [(cx + rx * np.sin(a), cy - ry * np.cos(a)) for a in angles]


STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_ellipse(0.5, 0.5, 0.33, 0.47, turn=1.05)],
    1: [[(0.58, 0.02), (0.52, 0.5), (0.46, 0.98)]],
    2: [
        [
            (0.12, 0.25),
            (0.28, 0.05),
            (0.58, 0.0),
            (0.82, 0.16),
            (0.8, 0.4),
            (0.5, 0.66),
            (0.12, 0.97),
            (0.9, 0.97),
        ]
    ],
    3: [
        [
            (0.15, 0.1),
            (0.48, 0.0),
            (0.8, 0.14),
            (0.75, 0.36),
            (0.42, 0.48),
            (0.8, 0.6),
            (0.86, 0.8),
            (0.58, 0.98),
            (0.14, 0.88),
        ]
    ],
    4: [[(0.22, 0.0), (0.12, 0.58), (0.88, 0.58)], [(0.7, 0.08), (0.68, 1.0)]],
    5: [
        [
            (0.82, 0.02),
            (0.26, 0.02),
            (0.2, 0.45),
            (0.5, 0.37),
            (0.8, 0.5),
            (0.86, 0.75),
            (0.6, 0.97),
            (0.15, 0.9),
        ]
    ],
    6: [
        [
            (0.72, 0.02),
            (0.4, 0.22),
            (0.2, 0.52),
            (0.18, 0.8),
            (0.4, 0.98),
            (0.7, 0.92),
            (0.82, 0.72),
            (0.62, 0.52),
            (0.32, 0.56),
            (0.2, 0.74),
        ]
    ],
    7: [[(0.08, 0.04), (0.92, 0.04), (0.42, 1.0)]],
    8: [_ellipse(0.5, 0.26, 0.26, 0.25, turn=1.02), _ellipse(0.5, 0.73, 0.32, 0.26, turn=1.02)],
    9: [_ellipse(0.48, 0.28, 0.3, 0.26, start=np.pi / 2, turn=1.0), [(0.78, 0.28), (0.74, 1.0)]],
}


def draw_digit(
    digit: int,
    canvas: tuple[int, int] = (200, 200),
    box: tuple[int, int, int] = (60, 40, 120),
    pen: float = 0.11,
    ink: int = 25,
    paper: int = 245,
    gradient: int = 0,
    mode: str = "L",
) -> Image.Image:
    """``box`` = (left, top, height) of the digit; its width is 0.7 x height; ``pen`` is the
    stroke width as a fraction of the height; ``gradient`` darkens the paper left to right."""
    width, height = canvas
    x0, y0, h = box
    w = 0.7 * h
    background = np.full((height, width), float(paper))
    if gradient:
        background -= np.linspace(0, gradient, width)[None, :]
    image = Image.fromarray(background.astype(np.uint8), "L")
    draw = ImageDraw.Draw(image)
    line_width = max(1, round(pen * h))
    for stroke in STROKES[digit]:
        points = [(x0 + x * w, y0 + y * h) for x, y in stroke]
        draw.line(points, fill=ink, width=line_width, joint="curve")
        for x, y in (points[0], points[-1]):  # round pen tips
            r = line_width / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def on_transparent(image: Image.Image) -> Image.Image:
    """Dark ink on a fully transparent background (as drawing apps export)."""
    gray = np.asarray(image.convert("L"), np.float32)
    paper, ink = gray.max(), gray.min()
    coverage = np.clip((paper - gray) / max(paper - ink, 1.0) * 255, 0, 255)
    alpha = Image.fromarray(coverage.astype(np.uint8), "L")  # ink opaque, paper transparent
    rgba = Image.new("RGBA", image.size, (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", image.size, (20, 20, 20, 255)), mask=alpha)
    return rgba
