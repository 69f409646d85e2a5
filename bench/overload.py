"""Overload: goodput (2xx answers per second) at 32 clients and at 2x and 4x the batch queue.

    python -m bench.overload [--model digit_odd] [--duration 10] [--baseline GIT_REF]

Starts cnn-serve (one worker, default settings; and with ``--baseline`` the same at another
commit), posts the model's input-size PNG with wrk at concurrency 32, 2 x max_queue and
4 x max_queue, and prints req/s, goodput, non-2xx, p50/p99 and goodput relative to c=32.
wrk waits up to 10 s for an answer (its default of 2 s would count queueing as errors).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile

from bench.run import free_port, multipart, sample_image, start, worktree, wrk
from service.settings import BatchPolicy

WRK_TIMEOUT_S = 10


def run_server(label: str, root, model: str, body: str, levels: list[int], duration: int) -> None:
    port = free_port()
    proc, _ = start("cnn-serve", model, port, root)
    try:
        runs = {c: wrk(port, body, c, duration, WRK_TIMEOUT_S) for c in levels}
    finally:
        proc.terminate()
        proc.wait(10)
    peak = runs[levels[0]]["goodput"]
    for c, r in runs.items():
        print(
            f"{label:<10}{c:>6}{r['rps']:>9.0f}{r['goodput']:>10.0f}{r['non2xx']:>9}"
            f"{r['p50']:>9.1f}{r['p99']:>9.1f}{r['goodput'] / peak:>8.2f}  "
            f"{r['socket_errors']}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digit_odd")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--baseline", metavar="GIT_REF")
    args = parser.parse_args()
    queue = BatchPolicy().max_queue
    levels = [32, 2 * queue, 4 * queue]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of sockets, both ends
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with tempfile.NamedTemporaryFile(suffix=".multipart", delete=False) as body:
        body.write(multipart(sample_image(args.model), args.model))
    print(
        f"## overload: {args.model}, input-size PNG, one worker, max_queue {queue}, wrk "
        f"{args.duration} s per level, timeout {WRK_TIMEOUT_S} s, {os.cpu_count()} cores"
    )
    print(
        f"{'server':<10}{'conc':>6}{'req/s':>9}{'goodput':>10}{'non-2xx':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'vs c32':>8}"
    )
    try:
        with worktree(args.baseline) as baseline:
            from bench.run import ROOT

            run_server("cnn-serve", ROOT, args.model, body.name, levels, args.duration)
            if baseline is not None:
                run_server("baseline", baseline, args.model, body.name, levels, args.duration)
    finally:
        os.unlink(body.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
