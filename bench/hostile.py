"""Hostile traffic: peak memory of one cnn-serve worker under bombs, many large images and
unfinished uploads at once, and whether it keeps answering.

    python -m bench.hostile [--duration 30] [--baseline GIT_REF]

For ``--duration`` seconds, from this process: 4 threads post decompression bombs (a
12000x12000 PNG; 32 x 6000x6000 RGBA PNGs in one request), 4 threads post large images
(one 6000x6000 RGBA PNG, which decodes; four 4032x3024 JPEG photos; an 8.7 MB BMP), and 100
sockets each open an upload of 9.5 MB, send half of it and stall (reopened when the server
closes them). The server's RSS is sampled every 0.1 s; ``/health/live`` is timed every 0.5 s.
Prints peak RSS, the answers by status, the slowest liveness probe, and a digit read after.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench.run import BOUNDARY, ROOT, free_port, rss_mb, start, worktree
from tests.service.handwriting import draw_digit, encode

UNFINISHED = 100


def form(*images: tuple[str, bytes]) -> bytes:
    parts = [
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
        for name, data in images
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def payloads() -> dict[str, list[bytes]]:
    """Request bodies by kind: bombs and large images."""
    rgba = encode(Image.new("RGBA", (6000, 6000), (0, 0, 0, 0)), "PNG")
    bomb = encode(Image.new("1", (12_000, 12_000)), "PNG")
    photo = encode(
        draw_digit(5, canvas=(4032, 3024), box=(1500, 900, 1200), mode="RGB"), "JPEG", quality=85
    )
    noise = np.random.default_rng(0).integers(0, 255, (1700, 1700, 3), np.uint8)
    bmp = encode(Image.fromarray(noise), "BMP")
    return {
        "bombs": [form(("bomb.png", bomb)), form(*[(f"{i}.png", rgba) for i in range(32)])],
        "large": [
            form(("rgba.png", rgba)),
            form(*[(f"{i}.jpg", photo) for i in range(4)]),
            form(("noise.bmp", bmp)),
        ],
    }


def post(port: int, body: bytes, statuses: Counter, lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST", "/predict", body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        )
        status = str(conn.getresponse().status)
    except OSError as exc:
        status = type(exc).__name__
    finally:
        conn.close()
    with lock:
        statuses[status] += 1


def sender(
    port: int, bodies: list[bytes], until: float, statuses: Counter, lock: threading.Lock
) -> None:
    i = 0
    while time.monotonic() < until:
        post(port, bodies[i % len(bodies)], statuses, lock)
        i += 1


def staller(port: int, until: float, statuses: Counter, lock: threading.Lock) -> None:
    """Keep an upload of 9.5 MB half sent; open another when the server closes it."""
    size = 9_500_000
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
        f"boundary={BOUNDARY}\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    half = b"\0" * (size // 2)
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head)
                sock.settimeout(max(0.1, until - time.monotonic()))
                sock.sendall(half)
                reply = sock.recv(64)
                status = reply[9:12].decode() if reply else "closed"
        except TimeoutError:
            status = "still open"
        except OSError as exc:
            status = type(exc).__name__
        with lock:
            statuses[f"unfinished:{status}"] += 1


def attack(label: str, root: Path, duration: int) -> None:
    port = free_port()
    proc, _ = start("cnn-serve", "digit_odd", port, root)
    bodies = payloads()
    idle = rss_mb(proc.pid)
    statuses: Counter = Counter()
    lock = threading.Lock()
    until = time.monotonic() + duration
    threads = [
        threading.Thread(target=sender, args=(port, bodies[kind], until, statuses, lock))
        for kind in ("bombs", "large")
        for _ in range(4)
    ]
    threads += [
        threading.Thread(target=staller, args=(port, until, statuses, lock))
        for _ in range(UNFINISHED)
    ]
    for t in threads:
        t.start()
    peak, slowest = idle, 0.0
    next_probe = time.monotonic()
    while time.monotonic() < until:
        peak = max(peak, rss_mb(proc.pid))
        if time.monotonic() >= next_probe:
            t0 = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/health/live")
                conn.getresponse().read()
                slowest = max(slowest, time.monotonic() - t0)
            except OSError:
                slowest = float("inf")
            next_probe = t0 + 0.5
        time.sleep(0.1)
    for t in threads:
        t.join(70)
    digit = encode(draw_digit(3, canvas=(600, 450), box=(200, 100, 250), mode="RGB"), "JPEG")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/predict",
        form(("after.jpg", digit)),
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    after = conn.getresponse().read().decode()
    hwm = rss_mb(proc.pid, "VmHWM:")
    proc.terminate()
    proc.wait(10)
    print(  # the processes' own peaks (VmHWM) came at different moments: their sum bounds it
        f"{label}: idle RSS {idle:.0f} MB, peak RSS {peak:.0f} MB (sampled every 0.1 s; the "
        f"processes' own peaks summed: {hwm:.0f}); slowest /health/live {slowest * 1000:.0f} ms"
    )
    print(f"{label}: answers {dict(sorted(statuses.items()))}")
    read = "3" if '"label":"3"' in after else after[:200]
    print(f"{label}: after the attack a pen 3 reads as {read}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--baseline", metavar="GIT_REF")
    args = parser.parse_args()
    print(f"## hostile mix for {args.duration} s against one worker (digit_odd default)")
    with worktree(args.baseline) as baseline:
        attack("cnn-serve", ROOT, args.duration)
        if baseline is not None:
            attack("baseline", baseline, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
