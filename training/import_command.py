"""``cnn-serve import``: a user's Keras image classifier as a served version - the command.

    cnn-serve import SOURCE --name NAME [--model-dir DIR] [--version N]
                            [--labels FILE | --labels OUTPUT=FILE ...]
                            [--head KIND | --head HEAD=KIND ...]
                            [--value-range LOW,HIGH] [--preprocessing resize|mnist]
                            [--input-size H,W] [--samples DIR]

SOURCE is a Keras 3 ``.keras`` file or a legacy ``.h5``/``.hdf5`` file, or a SavedModel
directory; :mod:`training.importer` turns it into a version. This module is the command's
light half: its arguments, options and answers, with neither TensorFlow nor Keras imported,
so ``--help`` and a mistyped flag answer at once and the process that runs the import in a
confined child (:mod:`training.sandbox`) never pays for them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training import repository, samples
from training.metadata import ModelMetadata

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a directory name in the repository


class Refused(Exception):
    """What makes a model impossible to serve, in one line for its owner."""


class Conflict(Refused):
    """Refused for the repository's state, not the model: the version exists, the model
    holds as many versions as it may, or another import is writing it."""


@dataclass
class Options:
    source: Path
    name: str
    model_dir: Path
    version: int | None = None
    labels: dict[str | None, Path] | None = None  # None: the only head
    heads: dict[str | None, str] | None = None  # declared kinds; None: the only head
    value_range: tuple[float, float] | None = None  # None: [0, 1] (uint8 SavedModels: 0..255)
    preprocessing: str = "resize"
    input_size: tuple[int, int] | None = None
    samples: Path | None = None  # a folder of sample images to keep with the version
    # bounds on what an untrusted file may cost (None: unbounded, for a trusted file)
    max_unpacked_bytes: int | None = None  # a .keras archive's members, unpacked
    max_memory_bytes: int | None = None  # the model's estimate (weights + activations)
    max_versions: int | None = None  # versions the model may hold


def summary(path: Path) -> str:
    meta = ModelMetadata.read(path)
    spec = meta.input
    heads = "; ".join(
        f"{o.name} ({o.kind}, {len(o.labels)} labels: "
        f"{', '.join(o.labels[:4])}{', ...' if len(o.labels) > 4 else ''})"
        for o in meta.outputs
    )
    return (
        f"imported {meta.name} v{meta.version} -> {path}\n"
        f"  input: {spec.height}x{spec.width}x{spec.channels} {spec.color_mode}, values "
        f"{spec.value_range[0]:g}..{spec.value_range[1]:g}, preprocessing "
        f"{spec.preprocessing}\n  heads: {heads}\n"
        f"  layers: {len(meta.layers)}, parameters: {meta.total_params:,}"
    )


def _pair(kind: type, text: str, what: str) -> tuple:
    try:
        low, high = (kind(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} is two numbers: A,B") from None
    return low, high


PAIRS = ("--value-range", "--input-size")  # flags whose value may start with a minus sign


def as_written(argv: list[str]) -> list[str]:
    """``--value-range -1,1`` as the user wrote it: argparse takes ``-1,1`` for a flag (it
    knows ``-1`` as a number, not ``-1,1``), so the pair is joined to its flag first."""
    joined: list[str] = []
    pending = False
    for arg in argv:
        if pending and not joined[-1].endswith("="):
            joined[-1] += f"={arg}"
        else:
            joined.append(arg)
        pending = arg in PAIRS
    return joined


def parser(default_model_dir: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnn-serve import", description=__doc__.splitlines()[0])
    p.add_argument(
        "source", type=Path, help="a .keras or .h5 model file, or a SavedModel directory"
    )
    p.add_argument("--name", required=True, help="the model's name in the service")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=default_model_dir,
        help=f"model repository (default: {default_model_dir})",
    )
    p.add_argument("--version", type=int, default=None, help="default: the next free one")
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="[OUTPUT=]FILE",
        help="one label per line, line N = class N; OUTPUT= for one of several heads (repeatable)",
    )
    p.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="[HEAD=]KIND",
        help="what a head gives: multiclass, binary, multilabel, logits, regression or raw "
        "(repeatable; needed for a head that does not end in softmax or sigmoid)",
    )
    p.add_argument(
        "--value-range",
        type=lambda t: _pair(float, t, "--value-range"),
        default=None,
        metavar="LOW,HIGH",
        help="the values the model expects for black and white (default 0,1, or "
        "0,255 for a SavedModel with uint8 input; e.g. 0,255 for a model with "
        "Rescaling(1/255) inside)",
    )
    p.add_argument("--preprocessing", choices=["resize", "mnist"], default="resize")
    p.add_argument(
        "--input-size",
        type=lambda t: _pair(int, t, "--input-size"),
        default=None,
        metavar="H,W",
        help="only for a model whose input size is not fixed",
    )
    p.add_argument(
        "--samples",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder of images of what the model takes: up to 8, kept small with the "
        "version for the explorer to offer",
    )
    return p


def options(argv: list[str], default_model_dir: Path, bounds: dict | None = None) -> Options:
    """The command line as :class:`Options` (argparse's exit on ``--help`` or a mistake)."""
    args = parser(default_model_dir).parse_args(as_written(argv))
    labels: dict[str | None, Path] = {}
    for item in args.labels:
        head, _, file = item.rpartition("=")
        labels[head or None] = Path(file).resolve()
    heads: dict[str | None, str] = {}
    for item in args.head:
        head, _, kind = item.rpartition("=")
        heads[head or None] = kind
    return Options(
        args.source.resolve(),
        args.name,
        args.model_dir.resolve(),
        args.version,
        labels,
        heads,
        args.value_range,
        args.preprocessing,
        args.input_size,
        args.samples.resolve() if args.samples else None,
        **(bounds or {}),
    )


def main(argv: list[str], default_model_dir: Path, bounds: dict | None = None, limits=None) -> int:
    """``cnn-serve import``: with ``limits`` (:class:`training.sandbox.Limits`), the file is
    read in a confined child process; ``bounds`` are :class:`Options`' ``max_*`` fields.
    Each step is printed as it starts."""
    chosen = options(argv, default_model_dir, bounds)
    say: Callable[[str], None] = lambda step: print(f"  {step}", flush=True)
    if chosen.samples is not None and not chosen.samples.is_dir():
        raise SystemExit(f"cnn-serve import: --samples {chosen.samples}: not a folder")
    print(f"importing {chosen.source.name} as {chosen.name}", flush=True)
    try:
        if limits is None:
            from training.importer import import_model

            path = import_model(chosen, say)
        else:
            from training import sandbox

            chosen.model_dir.mkdir(parents=True, exist_ok=True)
            with repository.scratch(chosen.model_dir) as scratch:
                path = sandbox.import_isolated(chosen, limits, scratch, say)
    except Refused as exc:
        raise SystemExit(f"cnn-serve import: {exc}") from None
    if chosen.samples is not None:  # read here, not in the confined child: the user's images
        kept = samples.keep(chosen.samples, path, say)
        say(f"samples: {len(kept)} kept ({', '.join(kept)})")
    print(summary(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path("models")))
