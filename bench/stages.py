"""Where a request's time goes: the µs of CPU each layer of cnn-serve spends per request,
from a real run.

    python -m bench.stages [--model digit_odd] [--concurrency 32] [--duration 10]
                           [--baseline GIT_REF]

Starts ``cnn-serve`` (one worker, the defaults a user gets: access line on), drives
``/predict`` with wrk posting the model's input-size PNG, and samples every thread of the
server with py-spy (``pip install py-spy``) meanwhile. Each sample is charged to the stage of
the deepest frame a rule below recognises (so a multipart parse inside the route counts as
the parse, not the route); µs per request = samples × sampling interval / requests served.
Samples are wall time of busy threads: the event loop's stages are what one core spends, the
``model`` stage runs on the inference thread beside it. ``--baseline REF`` profiles cnn-serve
as of that commit too, in the same run.
"""

from __future__ import annotations

import argparse
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
    ("multipart parse and form", ("multipart/", "service/uploads.py")),
    ("decode and preprocess", ("service/preprocess.py", "PIL/", "service/graph_decode.py")),
    (
        "inference glue (model input, answer)",
        ("service/inference.py", "service/model_input.py", "pydantic_core"),
    ),
    ("batcher (queue, futures)", ("service/batching.py",)),
    ("model (TensorFlow, inference thread)", ("service/model.py", "tensorflow/")),
]
OTHER = "event loop and the rest (asyncio, uvloop, GC)"


def stage_of(frames: list[str]) -> str:
    """The stage of a stack (root first): the deepest recognised frame's."""
    for frame in reversed(frames):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return OTHER


def profile(root: Path, model: str, concurrency: int, duration: int) -> tuple[Counter, int]:
    """(samples per stage, requests answered) for one server."""
    port = free_port()
    proc, _ = start("cnn-serve", model, port, root)
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
    samples: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples[stage_of(stack.split(";"))] += int(count)
    return samples, round(run["rps"] * duration)


def table(label: str, samples: Counter, requests: int) -> dict[str, float]:
    per_request = {s: n / RATE / requests * 1e6 for s, n in samples.items()}
    print(f"\n{label}: {requests:,} requests, {sum(samples.values()):,} samples")
    print(f"{'stage':<52}{'µs/request':>11}{'share':>8}")
    total = sum(per_request.values())
    for stage in [s for s, _ in STAGES] + [OTHER]:
        if stage in per_request:
            print(f"{stage:<52}{per_request[stage]:>11.1f}{per_request[stage] / total:>8.0%}")
    print(f"{'all busy threads':<52}{total:>11.1f}")
    return per_request


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digit_odd")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--baseline", metavar="GIT_REF")
    args = parser.parse_args()
    print(
        f"## stages of /predict, {args.model} PNG, c={args.concurrency}, {args.duration} s, "
        f"py-spy at {RATE} Hz"
    )
    ours = table("cnn-serve", *profile(ROOT, args.model, args.concurrency, args.duration))
    with worktree(args.baseline) as baseline:
        if baseline is not None:
            theirs = table(
                "baseline", *profile(baseline, args.model, args.concurrency, args.duration)
            )
            print(f"\n{'stage':<52}{'cnn-serve':>10}{'baseline':>10}")
            for stage in [s for s, _ in STAGES] + [OTHER]:
                print(f"{stage:<52}{ours.get(stage, 0):>10.1f}{theirs.get(stage, 0):>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
