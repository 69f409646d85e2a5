"""Where a request's time goes: the µs of CPU each layer of cnn-serve spends per request,
from a real run.

    python -m bench.stages [--model digit_odd] [--concurrency 32] [--duration 10]
                           [--baseline GIT_REF] [--stacks DIR]

Starts the HTTP floor (bench/floor_app.py), then ``cnn-serve`` (one worker, the defaults a
user gets: access line on); drives ``/predict`` with wrk posting the model's input-size PNG, and samples every thread of the
server with py-spy (``pip install py-spy``) meanwhile. Each sample is charged to the stage of
the deepest frame a rule below recognises (so a multipart parse inside the route counts as
the parse, not the route); µs per request = samples × sampling interval / requests served.
Samples are wall time of busy threads: the event loop's stages are what one core spends, the
``model`` stage runs on the inference thread beside it. ``--baseline REF`` profiles cnn-serve
as of that commit too, in the same run; ``--stacks DIR`` keeps py-spy's raw stacks to drill
into a stage.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.run import ROOT, free_port, multipart, sample_image, start, worktree, wrk

RATE = 250  # samples per second per thread
# (stage, substrings of "function (file)" frames) - the deepest frame that matches decides
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("HTTP head (uvicorn, httptools, head guard)", ("httptools_impl.py", "http_guard.py")),
    ("request gate (IDs, keys, body limits)", ("service/middleware.py", "service/auth.py")),
    ("metrics (prometheus-client)", ("prometheus_client/",)),
    ("access line (logging)", ("service/logs.py", "logging/__init__.py", "orjson")),
    ("routing and framework (Starlette, FastAPI)", ("starlette/", "fastapi/")),
    ("admission (budgets)", ("service/admission.py",)),
    ("multipart parse and form", ("multipart/", "multipart.py", "service/uploads.py")),
    ("decode and preprocess", ("service/preprocess.py", "PIL/", "service/graph_decode.py")),
    (
        "inference glue (model input, answer)",
        ("service/inference.py", "service/model_input.py", "pydantic_core"),
    ),
    ("batcher (queue, futures)", ("service/batching.py",)),
    ("model (TensorFlow, inference thread)", ("service/model.py", "tensorflow/")),
]
OTHER = "event loop and the rest (asyncio, uvloop, GC)"
TOTAL = "all busy threads"


# a thread-pool worker's own frame on top is one waiting for work, which py-spy's
# non-blocking sampling does not always tell from running
IDLE = ("_worker (concurrent/futures/thread.py",)


def stage_of(frames: list[str]) -> str | None:
    """The stage of a stack (root first): the deepest recognised frame's; None when idle."""
    if not frames[-1] or frames[-1].startswith(IDLE):
        return None
    for frame in reversed(frames):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return OTHER


def profile(
    kind: str,
    root: Path,
    model: str,
    concurrency: int,
    duration: int,
    stacks: Path | None = None,
) -> tuple[Counter, int]:
    """(samples per stage, requests answered) for one server (``cnn-serve`` or ``floor``);
    py-spy's raw stacks are copied to ``stacks`` when given."""
    port = free_port()
    proc, _ = start(kind, model, port, root)
    scratch = Path(tempfile.mkdtemp())
    body, raw = scratch / "body", scratch / "stacks.txt"
    body.write_bytes(multipart(sample_image(model), model))
    try:
        wrk(port, str(body), concurrency, 2)  # warm up
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(proc.pid),
                "--rate",
                str(RATE),
                "--duration",
                str(duration),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run = wrk(port, str(body), concurrency, duration)
        spy.wait(duration + 30)
    finally:
        proc.terminate()
        proc.wait(10)
    if stacks is not None:
        shutil.copyfile(raw, stacks)
    samples: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stage = stage_of(stack.split(";"))
        if stage is not None:
            samples[stage] += int(count)
    return samples, round(run["rps"] * duration)


def table(label: str, samples: Counter, requests: int) -> dict[str, float]:
    per_request = {s: n / RATE / requests * 1e6 for s, n in samples.items()}
    print(f"\n{label}: {requests:,} requests, {sum(samples.values()):,} samples")
    print(f"{'stage':<52}{'µs/request':>11}{'share':>8}")
    total = sum(per_request.values())
    for stage in [s for s, _ in STAGES] + [OTHER]:
        if stage in per_request:
            print(f"{stage:<52}{per_request[stage]:>11.1f}{per_request[stage] / total:>8.0%}")
    print(f"{TOTAL:<52}{total:>11.1f}")
    return {**per_request, TOTAL: total}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digit_odd")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--baseline", metavar="GIT_REF")
    parser.add_argument(
        "--stacks", metavar="DIR", type=Path, help="keep py-spy's raw stacks per server here"
    )
    args = parser.parse_args()
    if args.stacks:
        args.stacks.mkdir(parents=True, exist_ok=True)

    def run(kind: str, root: Path, label: str) -> dict[str, float]:
        stacks = args.stacks / f"{label}.txt" if args.stacks else None
        found = profile(kind, root, args.model, args.concurrency, args.duration, stacks)
        return table(label, *found)

    print(
        f"## stages of /predict, {args.model} PNG, c={args.concurrency}, {args.duration} s, "
        f"py-spy at {RATE} Hz"
    )
    columns = {
        "floor": run("floor", ROOT, "floor"),
        "cnn-serve": run("cnn-serve", ROOT, "cnn-serve"),
    }
    with worktree(args.baseline) as baseline:
        if baseline is not None:
            columns["baseline"] = run("cnn-serve", baseline, "baseline")
    print(f"\n{'stage':<52}" + "".join(f"{name:>11}" for name in columns))
    for stage in [s for s, _ in STAGES] + [OTHER, TOTAL]:
        print(f"{stage:<52}" + "".join(f"{c.get(stage, 0):>11.1f}" for c in columns.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
