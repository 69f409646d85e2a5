"""A version's sample images: a few small pictures of what the model takes, kept in
``<version>/samples/`` for the explorer to offer (``cnn-serve import --samples DIR``).

Each is re-encoded here as a PNG of at most ``MAX_SIDE`` pixels a side (what was given may be
a 12-megapixel photo or not an image at all); at most ``MAX_SAMPLES`` are kept, in name order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

SAMPLES_DIR = "samples"
MAX_SAMPLES = 8
MAX_SIDE = 256
MAX_SOURCE_PIXELS = 40_000_000  # a sample larger than this is not read
MAX_SOURCE_BYTES = 20 * 2**20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.png")  # what a kept sample is called


def keep(source: Path, version: Path, say: Callable[[str], None] = lambda line: None) -> list[str]:
    """Up to ``MAX_SAMPLES`` images of the folder ``source`` as ``version``'s samples; what is
    not an image is said and skipped. The names kept."""
    if not source.is_dir():
        raise ValueError(f"--samples {source}: not a folder")
    kept: list[str] = []
    target = version / SAMPLES_DIR
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        if len(kept) == MAX_SAMPLES:
            say(f"samples: kept the first {MAX_SAMPLES}, in name order")
            break
        picture = _small(path)
        if picture is None:
            say(f"samples: {path.name} is not an image we can read; skipped")
            continue
        name = _name(path.stem, kept)
        target.mkdir(exist_ok=True)
        picture.save(target / name, "PNG")
        kept.append(name)
    return kept


def _small(path: Path) -> Image.Image | None:
    if path.stat().st_size > MAX_SOURCE_BYTES:
        return None
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                return None
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))
            picture = image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError):
        return None
    picture.thumbnail((MAX_SIDE, MAX_SIDE))
    return picture


def _name(stem: str, taken: list[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("._-")[:56] or "sample"
    name, n = f"{base}.png", 2
    while name in taken:
        name, n = f"{base}-{n}.png", n + 1
    return name


def listed(version: Path) -> list[str]:
    """The samples a version holds, in name order (none when it has none)."""
    folder = version / SAMPLES_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if NAME.fullmatch(p.name) and p.is_file())[
        :MAX_SAMPLES
    ]
