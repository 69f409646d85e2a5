"""Offline classification: images/s of ``cnn-serve predict`` and ``evaluate`` on a folder,
in-process and through a running server (``--url`` mode), against the model alone at batch 256.

    python -m bench.offline [--digits 10000] [--photos 1000] [--rounds 2] [--cifar ZIP]

Makes 10,000 28x28 grayscale PNGs (digit_odd's input: decoded in the model's graph) and takes
1,000 CIFAR-10 JPEGs of the bundled cifar10's own validation split (the seeded 10 % that
training held out, from ``--cifar``: ../shared/datasets/cifar10/train-images.zip; without it,
the bundled samples with noise) into a temporary folder, in label folders. Three modes:
``in-process`` times :func:`service.offline.classify` in this process (the server built by
the app's lifespan as the commands build it, TensorFlow's threads set as they set them);
``evaluate`` is the ``cnn-serve evaluate`` command run on the folder, its own printed
images/s (from its first image to its last; loading, Grad-CAM and the report not counted);
``--url`` times ``classify`` against ``cnn-serve`` started as the command runs it. "x model"
is against the model's serving signature alone at batch 256 in this process, measured just
before and after each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from bench.run import ROOT, ModelAlone, free_port, start

SAMPLES = ROOT / "models"


def _bases(model: str, mode: str, size: int) -> list[tuple[str, np.ndarray]]:
    """The bundled samples of ``model``: (label, pixels), the label from the file's name
    (``digit-2.png``, ``cat.png``)."""
    return [
        (p.stem.rsplit("-", 1)[-1], np.asarray(Image.open(p).convert(mode).resize((size, size))))
        for p in sorted((SAMPLES / model / "1" / "samples").glob("*.png"))
    ]


def _labelled(folder: Path, label: str, name: str) -> Path:
    (folder / label).mkdir(exist_ok=True)
    return folder / label / name


def make_digits(folder: Path, n: int) -> None:
    """``n`` 28x28 PNGs in label folders: the bundled digit samples, shifted and speckled
    (no two alike)."""
    rng = np.random.default_rng(0)
    bases = _bases("digit_odd", "L", 28)
    for i in range(n):
        label, base = bases[i % len(bases)]
        pixels = np.roll(base, rng.integers(-3, 4, 2), axis=(0, 1)).astype(int)
        pixels = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(_labelled(folder, label, f"{i:05d}.png"))


def validation_photos(archive: Path, folder: Path, n: int) -> None:
    """The first ``n`` images of the validation split cifar10 v1 was trained beside (the
    order training.datasets reads the zip in, split by its seed), in label folders."""
    import zipfile

    from training.datasets import _class_order, split
    from training.metadata import ModelMetadata

    training = ModelMetadata.read(SAMPLES / "cifar10" / "1").training
    assert training is not None
    with zipfile.ZipFile(archive) as z:
        names = [m for m in z.namelist() if m.lower().endswith((".jpg", ".jpeg", ".png"))]
        by_class: dict[str, list[str]] = {}
        for name in sorted(names):
            by_class.setdefault(Path(name).parts[-2], []).append(name)
        ordered = [name for cls in _class_order(set(by_class)) for name in by_class[cls]]
        _, held_out = split(len(ordered), training.validation_split, training.seed)
        for i in held_out[:n]:
            target = folder / Path(ordered[i]).parts[-2] / Path(ordered[i]).name
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(z.read(ordered[i]))


def make_photos(folder: Path, n: int) -> None:
    """``n`` 32x32 JPEGs in label folders: the bundled CIFAR samples with noise."""
    rng = np.random.default_rng(1)
    bases = _bases("cifar10", "RGB", 32)
    for i in range(n):
        label, base = bases[i % len(bases)]
        noise = rng.integers(-25, 26, (32, 32, 3))
        pixels = np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(_labelled(folder, label, f"{i:05d}.jpg"), quality=90)


async def _time(engine, files) -> tuple[float, int]:
    """images/s over ``files``, after one chunk's warm-up (as the model alone's first call is
    not timed either: a run of 10,000 images pays it once)."""
    from service import offline

    async for _ in offline.classify(engine, files[: engine.chunking.files]):
        pass
    n, t0, errors = 0, time.perf_counter(), 0
    async for result in offline.classify(engine, files):
        n += 1
        errors += result.error is not None
    return n / (time.perf_counter() - t0), errors


async def in_process(model: str, files) -> tuple[float, int]:
    from service import offline

    async with offline.local_server({"default_model": model}) as server:
        return await _time(offline.LocalEngine(server, model, None, {"top_k": 1}), files)


def evaluate_command(model: str, folder: Path) -> tuple[float, int]:
    """``cnn-serve evaluate`` run as a user runs it: the images/s it prints, and the files it
    skipped (its summary goes to stderr)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "service.cli", "evaluate", str(folder), "--model", model]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CNN_SERVE_MODEL_DIR": str(SAMPLES)}
        done = subprocess.run(
            [*cmd, "--out", out], env=env, capture_output=True, text=True, check=True
        )
    said = re.search(r"([\d,]+) skipped \(([\d,]+) images/s\)", done.stdout)
    if said is None:
        raise RuntimeError(f"cnn-serve evaluate said: {done.stdout}{done.stderr}")
    skipped, rate = (int(x.replace(",", "")) for x in said.groups())
    print(f"  {done.stdout.splitlines()[0]}", file=sys.stderr)
    return rate, skipped


async def through_server(model: str, files, url: str) -> tuple[float, int]:
    from service import offline
    from service.client import Client

    with Client(url) as client:
        return await _time(offline.RemoteEngine(client, model, None, {"top_k": 1}), files)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--digits", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--cifar", type=Path, default=ROOT.parent / "shared/datasets/cifar10/train-images.zip"
    )
    args = parser.parse_args()
    from service.image_files import gather
    from service.offline import local_settings
    from service.registry import configure_threads

    commands = local_settings()  # the model alone runs on the threads the commands use
    configure_threads(commands.inference_threads, commands.graph_threads)

    with tempfile.TemporaryDirectory() as tmp:
        sets = {"digit_odd": Path(tmp, "digits"), "cifar10": Path(tmp, "photos")}
        for folder in sets.values():
            folder.mkdir()
        make_digits(sets["digit_odd"], args.digits)
        if args.cifar.is_file():
            validation_photos(args.cifar, sets["cifar10"], args.photos)
        else:
            make_photos(sets["cifar10"], args.photos)
        print(
            f"\n## offline classification ({date.today()}, {platform.machine()}, "
            f"{os.cpu_count()} cores)\n"
        )
        print(
            f"{'set':<32}{'mode':<14}{'images/s':>10}{'errors':>8}{'model b256':>12}{'x model':>9}"
        )
        ratios: dict[tuple[str, str], list[float]] = {}
        for model, folder in sets.items():
            files = list(gather([folder]))
            label = f"{len(files):,} {'28x28 PNG' if model == 'digit_odd' else 'CIFAR JPEG'}"
            alone = ModelAlone(model)
            port = free_port()
            server, _ = start("cnn-serve", model, port, CNN_SERVE_GRPC_PORT="0")
            try:
                for _ in range(args.rounds):
                    for mode in ("in-process", "evaluate", "--url"):
                        before = alone.rate(256)
                        if mode == "in-process":
                            rate, errors = asyncio.run(in_process(model, files))
                        elif mode == "evaluate":
                            rate, errors = evaluate_command(model, folder)
                        else:
                            url = f"http://127.0.0.1:{port}"
                            rate, errors = asyncio.run(through_server(model, files, url))
                        model_rate = (before + alone.rate(256)) / 2
                        ratios.setdefault((label, mode), []).append(rate / model_rate)
                        print(
                            f"{label:<32}{mode:<14}{rate:>10,.0f}{errors:>8}"
                            f"{model_rate:>12,.0f}{rate / model_rate:>9.2f}"
                        )
            finally:
                server.terminate()
                server.wait(10)
        print(
            "\nmedian x model: "
            + ", ".join(
                f"{label} {mode} {statistics.median(r):.2f}" for (label, mode), r in ratios.items()
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
