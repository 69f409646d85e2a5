"""A version's samples: small PNGs of what was given, what is not an image skipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training import samples


def _photo(path, size, mode="RGB"):
    pixels = np.random.default_rng(size[0]).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def test_samples_are_kept_small_named_and_bounded(tmp_path):
    given, version = tmp_path / "given", tmp_path / "1"
    given.mkdir()
    version.mkdir()
    _photo(given / "big photo.jpg", (1200, 900))
    _photo(given / "digit.png", (28, 28), "L")
    (given / "notes.txt").write_text("not an image")
    for i in range(8):
        _photo(given / f"z{i}.png", (40 + i, 40))
    said: list[str] = []
    kept = samples.keep(given, version, said.append)
    assert kept[:2] == ["big_photo.png", "digit.png"] and len(kept) == samples.MAX_SAMPLES
    assert any("notes.txt is not an image" in line for line in said)
    assert any("kept the first 8" in line for line in said)
    with Image.open(version / "samples" / "big_photo.png") as big:
        assert big.format == "PNG" and max(big.size) == samples.MAX_SIDE
    with Image.open(version / "samples" / "digit.png") as digit:
        assert digit.mode == "L" and digit.size == (28, 28)
    assert samples.listed(version) == sorted(kept)


def test_a_version_without_samples_lists_none(tmp_path):
    assert samples.listed(tmp_path) == []
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "../odd name.png").touch()
    (tmp_path / "samples" / ".hidden.png").touch()
    assert samples.listed(tmp_path) == []


def test_samples_must_be_a_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        samples.keep(tmp_path / "missing", tmp_path)
