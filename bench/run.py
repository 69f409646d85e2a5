"""Load benchmark: the HTTP floor vs the naive way vs cnn-serve, driven by wrk on 127.0.0.1.

    python -m bench.run [--models digit_odd cifar10] [--duration 10] [--concurrency 1 8 32 64]
                        [--format PNG|JPEG|BMP] [--photo] [--baseline GIT_REF] [--access-off]
                        [--rounds N]

For each model: starts each server in turn (one worker; cnn-serve as ``cnn-serve`` runs it),
measures cold start (process start to ready) and peak RSS, drives it with wrk at each
concurrency, and prints req/s, p50, p99 and non-2xx, with the ratios cnn-serve/floor and
cnn-serve/naive; then model-only images/s at batch 1, 8, 32, 128.

The image is the model's input size (a pen digit 7, or colour noise for cifar10), or with
``--photo`` a 1200x900 JPEG photo of a pen digit on a page. ``--baseline REF`` also runs
cnn-serve as of that git commit (from a temporary worktree), ``--access-off`` cnn-serve
without its access line, in the same run. ``--rounds N`` runs them all N times, each round
in the reverse order of the one before (the host's speed drifts within minutes), and gives
each ratio as the median of the rounds' with every round's beside it.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BOUNDARY = "cnnservebenchboundary"


def sample_image(model: str, fmt: str = "PNG", photo: bool = False) -> bytes:
    """The model's input size: a pen digit 7 (digit_odd) or colour noise (cifar10); or a
    1200x900 photo of a page with a pen digit (JPEG)."""
    buf = io.BytesIO()
    if photo:
        from bench.photo import pages

        return next(data for digit, data in pages((1200, 900), 8) if digit == 7)
    if model == "cifar10":
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(buf, fmt)
    else:
        from tests.service.handwriting import draw_digit

        draw_digit(7, canvas=(28, 28), box=(7, 4, 20), pen=0.12).save(buf, fmt)
    return buf.getvalue()


def multipart(image: bytes, model: str, fmt: str = "PNG") -> bytes:
    ext = fmt.lower()
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="x.{ext}"\r\nContent-Type: image/{ext}\r\n\r\n'
        ).encode()
        + image
        + (
            f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            f"{model}\r\n--{BOUNDARY}--\r\n"
        ).encode()
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest(model: str) -> Path:
    root = ROOT / "models" / model
    return max((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def start(
    kind: str, model: str, port: int, root: Path = ROOT, **env_extra: str
) -> tuple[subprocess.Popen, float]:
    """Start a server (``floor``, ``naive``, or ``cnn-serve`` from the source tree ``root``)
    and wait until it is ready: (process, cold start in seconds)."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(root),
        "CNN_SERVE_MODEL_DIR": str(ROOT / "models"),
        **env_extra,
    }
    if kind == "cnn-serve":  # as the `cnn-serve` command runs it
        cmd = [sys.executable, "-m", "service.cli", "--host", "127.0.0.1", "--port", str(port)]
        env.update(CNN_SERVE_DEFAULT_MODEL=model)
    else:
        app = {"floor": "bench.floor_app:app", "naive": "bench.naive_app:app"}[kind]
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    if kind == "naive":
        env["NAIVE_MODEL_PATH"] = str(latest(model))
    t0 = time.perf_counter()
    # the defaults a user gets: info level, the access line per request, written to a file
    # as a container runtime or journald would take it
    with tempfile.TemporaryFile(prefix=f"bench-{kind}-", suffix=".log") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/health/ready"
    while time.perf_counter() - t0 < 120:
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} did not become ready")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's decode worker processes)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(parents.get(tree[-1], []))
    return tree


def rss_mb(pid: int, field: str = "VmRSS:") -> float:
    """A server's resident memory (``VmHWM:``: its peak) in MB, with its worker processes'."""
    total = 0
    for member in _tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith(field))
    return total / 1024 if total else float("nan")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(
    port: int,
    body_file: str,
    connections: int,
    duration: int,
    timeout_s: int = 2,
    path: str = "/predict",
    content_type: str | None = f"multipart/form-data; boundary={BOUNDARY}",
    header_length: int | None = None,
) -> dict:
    """wrk POSTing ``body_file`` to ``path``: req/s, p50/p99 ms, non-2xx, goodput."""
    env = {**os.environ, "BENCH_BODY": body_file, "BENCH_PATH": path}
    if content_type:
        env["BENCH_CONTENT_TYPE"] = content_type
    if header_length is not None:
        env["BENCH_HEADER_LENGTH"] = str(header_length)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(connections, 2)),
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            f"{timeout_s}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "post.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE).group(1))
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    failed = int(non2xx.group(1)) if non2xx else 0
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "non2xx": failed,
        "goodput": (total - failed) / duration,
        "socket_errors": errors.group(0) if errors else "",
    }


class ModelAlone:
    """A model's serving signature called back to back in this process: the images/s a
    server's answers are measured against."""

    def __init__(self, model: str) -> None:
        from service.model import ServedModel

        path = latest(model)
        self.served = ServedModel(model, int(path.name), path, "/device:CPU:0")
        self.served.load()

    def rate(self, batch: int, seconds: float = 2.0) -> float:
        shape = self.served.metadata.input.shape
        x = np.random.default_rng(0).random((batch, *shape), np.float32)
        self.served.predict(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.served.predict(x)
            n += batch
        return n / (time.perf_counter() - t0)


def model_only(model: str, batches: tuple[int, ...] = (1, 8, 32, 128)) -> dict[int, float]:
    alone = ModelAlone(model)
    return {batch: alone.rate(batch) for batch in batches}


@contextmanager
def worktree(ref: str | None):
    """The source tree of git commit ``ref`` (a temporary worktree), or None."""
    if ref is None:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="cnn-serve-baseline-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), ref], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
        )


def measure_servers(
    servers: list, model: str, body: str, concurrency: list[int], duration: int
) -> dict[str, dict]:
    """Each server in turn: its cold start, peak RSS and a wrk run at every concurrency."""
    results = {}
    for kind, server, root, env in servers:
        port = free_port()
        proc, cold = start(server, model, port, root, **env)
        try:
            runs = {c: wrk(port, body, c, duration) for c in concurrency}
            results[kind] = {"cold": cold, "rss": rss_mb(proc.pid, "VmHWM:"), "runs": runs}
        finally:
            proc.terminate()
            proc.wait(10)
    return dict(sorted(results.items(), key=lambda kv: ORDER.index(kv[0])))


ORDER = ["floor", "naive", "cnn-serve", "no-access", "baseline"]


def _over(top: str, bottom: str, field: str = "rps"):
    """One round's ratio of ``top``'s figure to ``bottom``'s at a concurrency (None if a
    server did not run)."""

    def ratio(results: dict, c: int) -> float | None:
        if top not in results or bottom not in results:
            return None
        return results[top]["runs"][c][field] / results[bottom]["runs"][c][field]

    return ratio


RATIOS = [
    ("cnn-serve/floor", _over("cnn-serve", "floor")),
    ("cnn-serve/naive", _over("cnn-serve", "naive")),
    ("p99/p50", lambda r, c: r["cnn-serve"]["runs"][c]["p99"] / r["cnn-serve"]["runs"][c]["p50"]),
    ("p50 cnn-serve/naive", _over("cnn-serve", "naive", "p50")),
    ("cnn-serve/no-access", _over("cnn-serve", "no-access")),
    ("cnn-serve/baseline", _over("cnn-serve", "baseline")),
]


def _ratios(values: list[float]) -> str:
    """One round's ratio, or the median of several and each round's."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{float(np.median(values)):.2f} ({' · '.join(f'{v:.2f}' for v in values)})"


def bench_model(
    model: str,
    concurrency: list[int],
    duration: int,
    fmt: str,
    photo: bool,
    baseline: Path | None,
    access_off: bool = False,
    rounds: int = 1,
) -> None:
    if photo:
        fmt = "JPEG"
    with tempfile.NamedTemporaryFile(suffix=".multipart", delete=False) as body:
        body.write(multipart(sample_image(model, fmt, photo), model, fmt))
    # (label, server, source tree, environment)
    servers = [("floor", "floor", ROOT, {}), ("naive", "naive", ROOT, {})]
    servers.append(("cnn-serve", "cnn-serve", ROOT, {}))
    if access_off:
        servers.append(("no-access", "cnn-serve", ROOT, {"CNN_SERVE_ACCESS_LOG": "false"}))
    if baseline is not None:
        servers.append(("baseline", "cnn-serve", baseline, {}))
    # the host's speed drifts; later rounds run the servers in the reverse order of the one
    # before, so no server always runs first
    results: list[dict[str, dict]] = [
        measure_servers(
            servers[:: 1 if r % 2 == 0 else -1], model, body.name, concurrency, duration
        )
        for r in range(rounds)
    ]
    os.unlink(body.name)
    print(
        f"\n## {model}, {'1200x900 photo, ' if photo else ''}{fmt}  ({date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} cores, wrk {duration}s per run, one uvicorn "
        f"worker{f', {rounds} rounds' if rounds > 1 else ''})"
    )
    print(f"{'server':<10}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for number, round_results in enumerate(results, 1):
        if rounds > 1:
            print(f"round {number}")
        for kind, r in round_results.items():
            for c, run in r["runs"].items():
                print(
                    f"{kind:<10}{c:>5}{run['rps']:>10.0f}{run['p50']:>9.2f}{run['p99']:>9.2f}"
                    f"{run['non2xx']:>9}  {run['socket_errors']}"
                )
    for c in concurrency:
        print(
            f"c={c:<3} "
            + "   ".join(
                f"{name} = {_ratios([fn(r, c) for r in results])}"
                for name, fn in RATIOS
                if all(fn(r, c) is not None for r in results)
            )
        )
    for kind in results[0]:
        cold = " · ".join(f"{r[kind]['cold']:.2f}" for r in results)
        rss = " · ".join(f"{r[kind]['rss']:.0f}" for r in results)
        print(f"{kind:<10} cold start {cold} s   peak RSS {rss} MB")
    rates = model_only(model)
    print("model only (images/s): " + "   ".join(f"batch {b}: {v:,.0f}" for b, v in rates.items()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["digit_odd", "cifar10"])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument(
        "--format",
        default="PNG",
        choices=["PNG", "JPEG", "BMP"],
        help="image format posted; PNGs at the input size are decoded in the "
        "model graph, other formats by Pillow",
    )
    parser.add_argument(
        "--photo", action="store_true", help="post a 1200x900 JPEG photo of a pen digit instead"
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run cnn-serve as of this commit, in the same run",
    )
    parser.add_argument(
        "--access-off",
        action="store_true",
        help="also run cnn-serve without its access line (no-access), in the same run",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server this many times, in alternating order; ratios are the median",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk not found (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    with worktree(args.baseline) as baseline:
        for model in args.models:
            bench_model(
                model,
                args.concurrency,
                args.duration,
                args.format,
                args.photo,
                baseline,
                args.access_off,
                args.rounds,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
