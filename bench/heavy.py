"""Heavy endpoints under attack: Grad-CAM and feature maps against one cnn-serve worker.

    python -m bench.heavy [--only sweep starve burst] [--duration 20] [--baseline GIT_REF]

Three scenarios, each on a fresh server with the default settings:

- ``sweep``: ``/explain`` once for every served (model, version, layer with an [h, w, k]
  output, head), two clients: answers by status, peak and final RSS.
- ``starve``: for ``--duration`` s, 4 clients ask ``/explain`` of ``cifar10_resnet``'s newest
  version for layers in turn (more layers than the Grad-CAM cache holds, so they are traced
  again and again) while one client times ``/predict`` on that version: its p50 and max, and
  the explain answers by status.
- ``burst``: 16 clients each post ``/feature-maps`` of ``cifar10_resnet`` with 64 images
  (format npz) for ``--duration`` s, then again with the most images the 413 says would fit:
  answers by status, peak RSS, and RSS before and 5 s after the burst.

RSS is read from /proc every 0.05 s (and the kernel's high-water mark, VmHWM).
``--baseline REF`` runs the same against cnn-serve as of that git commit, in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import sys
import threading
import time
from collections import Counter
from itertools import count
from pathlib import Path

import numpy as np
from PIL import Image

from bench.run import BOUNDARY, ROOT, free_port, rss_mb, start, worktree
from tests.service.handwriting import draw_digit, encode

RESNET = "cifar10_resnet"
CONTENT_TYPE = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def form(files: list[bytes], **fields: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"'
        f"\r\nContent-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    parts += [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)))


def post(port: int, path: str, body: bytes, timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, CONTENT_TYPE)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())


class Sampler:
    """Peak RSS of a process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_mb(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_mb(self.pid, "VmHWM:"))


def run_clients(n: int, work) -> Counter:
    statuses: Counter = Counter()
    lock = threading.Lock()

    def client(i: int) -> None:
        for status in work(i):
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def combinations(port: int) -> list[tuple[str, int, str, str]]:
    """Every (model, version, spatial layer, head) the server has."""
    found = []
    for model in get(port, "/models")["models"]:
        for version in model["versions"]:
            meta = get(port, f"/models/{model['name']}/versions/{version['version']}")
            layers = [layer["name"] for layer in meta["layers"] if len(layer["output_shape"]) == 3]
            heads = [o["name"] for o in meta["metadata"]["outputs"]]
            found += [
                (model["name"], version["version"], layer, head)
                for layer in layers
                for head in heads
            ]
    return found


def sweep(port: int, pid: int) -> str:
    todo = combinations(port)
    images = {"digit": encode(draw_digit(7)), "colour": photo(1)}
    sampler, start_rss, t0 = Sampler(pid), rss_mb(pid), time.monotonic()
    cursor = count()

    def work(_):
        while (i := next(cursor)) < len(todo):
            model, version, layer, head = todo[i]
            image = images["colour" if "cifar" in model else "digit"]
            yield post(
                port,
                f"/models/{model}/explain",
                form([image], version=str(version), layer=layer, output=head),
            )[0]

    statuses = run_clients(2, work)
    peak = sampler.stop()
    return (
        f"sweep: {len(todo)} combinations in {time.monotonic() - t0:.0f} s; answers "
        f"{dict(sorted(statuses.items()))}; RSS {start_rss:.0f} MB at start, peak "
        f"{peak:.0f} MB, {rss_mb(pid):.0f} MB after"
    )


def starve(port: int, pid: int, duration: float) -> str:
    newest = get(port, f"/models/{RESNET}")["default_version"]
    meta = get(port, f"/models/{RESNET}/versions/{newest}")
    layers = [layer["name"] for layer in meta["layers"] if len(layer["output_shape"]) == 3]
    image, until, cursor = photo(2), time.monotonic() + duration, count()
    latencies: list[float] = []
    predict_statuses: Counter = Counter()

    def predictor() -> None:
        body = form([image], model=RESNET, version=str(newest))
        while time.monotonic() < until:
            t0 = time.perf_counter()
            status, _ = post(port, "/predict", body)
            latencies.append(time.perf_counter() - t0)
            predict_statuses[status] += 1
            time.sleep(0.05)

    def work(_):
        while time.monotonic() < until:
            layer = layers[next(cursor) % len(layers)]
            yield post(
                port, f"/models/{RESNET}/explain", form([image], version=str(newest), layer=layer)
            )[0]

    timer = threading.Thread(target=predictor)
    timer.start()
    statuses = run_clients(4, work)
    timer.join()
    ms = sorted(1000 * s for s in latencies)
    return (
        f"starve: /predict on {RESNET} v{newest} beside 4 explain clients ({len(ms)} "
        f"requests {dict(predict_statuses)}): p50 {statistics.median(ms):.1f} ms, max "
        f"{ms[-1]:.0f} ms; explain answers {dict(sorted(statuses.items()))}"
    )


def burst(port: int, pid: int, duration: float) -> str:
    lines = []
    images = [photo(i) for i in range(64)]
    big = form(images, format="npz")
    status, answer = post(port, f"/models/{RESNET}/feature-maps", big)
    fits = re.search(r"send at most (\d+) image", answer.decode(errors="replace"))
    sizes = [64] + ([int(fits.group(1))] if status == 413 and fits else [])
    for n in sizes:
        body = form(images[:n], format="npz")
        before, sampler = rss_mb(pid), Sampler(pid)
        until = time.monotonic() + duration

        def work(_, body=body, until=until):
            while time.monotonic() < until:
                yield post(port, f"/models/{RESNET}/feature-maps", body)[0]

        statuses = run_clients(16, work)
        peak = sampler.stop()
        time.sleep(5)
        lines.append(
            f"burst: 16 clients x {n}-image npz for {duration:.0f} s: answers "
            f"{dict(sorted(statuses.items()))}; RSS {before:.0f} MB before, peak "
            f"{peak:.0f} MB, {rss_mb(pid):.0f} MB 5 s after"
        )
    return "\n".join(lines)


def attack(label: str, root: Path, scenarios: list[str], duration: float) -> None:
    for scenario in scenarios:
        port = free_port()
        proc, _ = start("cnn-serve", "digit_odd", port, root)
        try:
            if scenario == "sweep":
                line = sweep(port, proc.pid)
            elif scenario == "starve":
                line = starve(port, proc.pid, duration)
            else:
                line = burst(port, proc.pid, duration)
        finally:
            proc.terminate()
            proc.wait(30)
        for part in line.splitlines():
            print(f"{label}: {part}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["sweep", "starve", "burst"],
        default=["sweep", "starve", "burst"],
    )
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--baseline", metavar="GIT_REF")
    args = parser.parse_args()
    print(f"## heavy endpoints, one worker, defaults ({', '.join(args.only)})", flush=True)
    with worktree(args.baseline) as baseline:
        attack("cnn-serve", ROOT, args.only, args.duration)
        if baseline is not None:
            attack("baseline", baseline, args.only, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
