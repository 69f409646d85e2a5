"""Photo uploads: decode + normalise time per photo, and how many pen digits are read right.

    python -m bench.photo [--per-size 60] [--repeat 3]

Draws pen digits on paper pages (seeded: size, place, pen width, ink, paper, uneven light)
as the service receives phone photos (JPEG, quality 80, 1200x900 and 4032x3024), times
:func:`service.preprocess.prepare` (bytes -> the model's input) on one thread, and reports
digit_odd's digit accuracy on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.preprocess import prepare
from tests.service.handwriting import draw_digit, encode

SIZES = ((1200, 900), (4032, 3024))
MAX_PIXELS = 40_000_000


def pages(size: tuple[int, int], count: int, seed: int = 0):
    """(digit, JPEG bytes) of ``count`` seeded pen-on-paper pages of ``size``."""
    rng = np.random.default_rng(seed + size[0])
    width, height = size
    for i in range(count):
        digit = i % 10
        h = int(height * rng.uniform(0.08, 0.6))
        left = int(rng.uniform(0, width - 0.7 * h))
        top = int(rng.uniform(0, height - h))
        paper = int(rng.integers(160, 250))
        page = draw_digit(
            digit,
            canvas=size,
            box=(left, top, h),
            pen=rng.uniform(0.03, 0.12),
            ink=int(rng.integers(10, paper - 70)),
            paper=paper,
            gradient=int(rng.integers(0, 90)),
            mode="RGB",
        )
        yield digit, encode(page, "JPEG", quality=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-size", type=int, default=60, help="photos per size")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per photo (min)")
    args = parser.parse_args(argv)

    from service.model import ServedModel
    from training.metadata import ModelMetadata

    path = max(
        (p for p in (ROOT / "models" / "digit_odd").iterdir() if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    spec = ModelMetadata.read(path).input
    model = ServedModel("digit_odd", int(path.name), path, "/device:CPU:0")
    model.load()
    print(
        f"digit_odd v{path.name}, {args.per_size} JPEG photos per size, best of "
        f"{args.repeat} runs per photo, one thread"
    )
    for size in SIZES:
        times, inputs, truth = [], [], []
        for digit, data in pages(size, args.per_size):
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                arr = prepare(data, spec, MAX_PIXELS)
                best = min(best, time.perf_counter() - start)
            times.append(best * 1000)
            inputs.append(arr)
            truth.append(digit)
        predicted = model.predict(np.stack(inputs))["digit"].argmax(axis=1)
        correct = int((predicted == np.array(truth)).sum())
        print(
            f"{size[0]}x{size[1]}: decode + normalise median {statistics.median(times):.2f} "
            f"ms, p90 {np.percentile(times, 90):.2f} ms, max {max(times):.2f} ms; digits "
            f"read right {correct}/{len(truth)} ({100 * correct / len(truth):.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
