"""Model management as an abusive client uses it: what each case costs one cnn-serve worker
(its own RSS, and its process tree's, which includes the process that reads model files),
and whether it still serves.

    python -m bench.abuse [--cycles 30] [--baseline GIT_REF]

The server runs with uploads on, model control ``explicit`` and an admin key (a build that
knows no admin keys ignores the setting), over a copy of the bundled models. Cases, in order:

- ``unload``: an anonymous ``POST /v2/repository/models/digit_odd/unload``, then readiness;
- ``hostile uploads``: the three hostile ``.keras`` files of tests/service/test_untrusted_models
  (a 20000x20000 input, Dense(100000) over small weights, a 300 MB whitespace config.json),
  each uploaded with the admin key: status, seconds, the server's RSS before, peak and after;
- ``tensorproto``: four 45-byte TF Serving ``Predict`` calls at once declaring a
  41,000,000-value DT_DOUBLE tensor;
- ``idle grpc``: 40 ``ModelInfer`` calls that never send their message, then a health Check
  and an inference from another connection;
- ``rejected``: 16 ``ModelInfer`` calls at once, each a 39 MB message the model refuses
  (the wrong shape), then the server's RSS a few seconds later;
- ``cycles``: N unload+load cycles of cifar10_resnet, idle RSS before and after.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bench.run import ROOT, free_port, rss_mb, start, worktree
from tests.service.rpc.test_abuse import huge_predict, idle_calls, infer_request
from tests.service.test_untrusted_models import huge_input, whitespace_config, wide_dense

ADMIN = "bench-admin-key-0123456789"


def own_rss_mb(pid: int) -> float:
    """The server process alone (not the processes it started)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    """The server's own RSS and its tree's, sampled every 50 ms while in use."""

    def __init__(self, pid: int) -> None:
        self.pid, self.own, self.tree = pid, 0.0, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.own = max(self.own, own_rss_mb(self.pid))
            self.tree = max(self.tree, rss_mb(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def hostile_uploads(label: str, url: str, pid: int, scratch: Path) -> None:
    for make in (huge_input, wide_dense, whitespace_config):
        path = make(scratch / f"{make.__name__}.keras")
        before = own_rss_mb(pid)
        t0 = time.perf_counter()
        with Sampler(pid) as sampled:
            try:
                status = httpx.post(
                    f"{url}/models/evil/versions",
                    files={"file": (path.name, path.read_bytes())},
                    headers={"X-API-Key": ADMIN},
                    timeout=120,
                ).status_code
            except httpx.TimeoutException:
                status = "no answer in 120 s"
        seconds = time.perf_counter() - t0
        time.sleep(1.5)  # the allocator's trim after a quiet second
        print(
            f"{label}: upload {make.__name__} ({path.stat().st_size / 1024:,.0f} KB): "
            f"{status} in {seconds:.1f} s; server RSS {before:.0f} -> peak "
            f"{sampled.own:.0f} -> {own_rss_mb(pid):.0f} MB (tree peak {sampled.tree:.0f})"
        )
        if status in (201, 202):  # a build that took it: unload it again for the next file
            httpx.post(
                f"{url}/v2/repository/models/evil/unload", headers={"X-API-Key": ADMIN}, timeout=120
            )


def codes(call, request, times: int) -> list[str]:
    """``call(request)`` ``times`` times at once: each answer's status code."""

    def one(_) -> str:
        try:
            call(request, timeout=60)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(one, range(times)))


def tensorproto(label: str, grpc_address: str, pid: int) -> None:
    request = huge_predict()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(grpc_address))
    before = own_rss_mb(pid)
    with Sampler(pid) as sampled:
        answers = codes(stub.Predict, request, 4)
    time.sleep(1.5)
    print(
        f"{label}: 4 x {request.ByteSize()}-byte Predict declaring 41,000,000 doubles: "
        f"{answers}; server RSS {before:.0f} -> peak {sampled.own:.0f} -> {own_rss_mb(pid):.0f} MB"
    )


def idle_grpc(label: str, grpc_address: str) -> None:
    results = []
    with idle_calls(grpc_address, 40, 60), grpc.insecure_channel(grpc_address) as other:
        time.sleep(1)
        try:
            health = health_pb2_grpc.HealthStub(other).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            results.append(
                f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}"
            )
        except grpc.RpcError as exc:
            results.append(f"health {exc.code().name}")
        try:
            pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(infer_request(), timeout=5)
            results.append("infer OK")
        except grpc.RpcError as exc:
            results.append(f"infer {exc.code().name}")
    print(f"{label}: 40 calls that never send their message, then {', '.join(results)}")


def rejected(label: str, grpc_address: str, pid: int) -> None:
    request = pb.ModelInferRequest(model_name="digit_odd")
    values = 39 * 2**20 // 4
    request.inputs.add(name="image", datatype="FP32", shape=[values // 784 + 1, 28, 28, 1])
    request.raw_input_contents.append(bytes(4 * values))
    options = [("grpc.max_send_message_length", 64 * 2**20)]
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_address, options))
    before = own_rss_mb(pid)
    with Sampler(pid) as sampled:
        answers = sorted(set(codes(stub.ModelInfer, request, 16)))
    time.sleep(3)
    print(
        f"{label}: 16 x 39 MB ModelInfer refused ({', '.join(answers)}): server RSS "
        f"{before:.0f} -> peak {sampled.own:.0f} -> {own_rss_mb(pid):.0f} MB 3 s later"
    )


def cycles(label: str, url: str, pid: int, count: int) -> None:
    admin = {"X-API-Key": ADMIN}
    path = "/v2/repository/models/cifar10_resnet"
    time.sleep(2)
    before = own_rss_mb(pid)
    t0 = time.perf_counter()
    for _ in range(count):
        httpx.post(f"{url}{path}/unload", headers=admin, timeout=60).raise_for_status()
        httpx.post(f"{url}{path}/load", headers=admin, timeout=120).raise_for_status()
    time.sleep(2)
    print(
        f"{label}: {count} unload+load cycles of cifar10_resnet (3 versions) in "
        f"{time.perf_counter() - t0:.0f} s: idle RSS {before:.0f} -> {own_rss_mb(pid):.0f} MB"
    )


def anonymous_unload(label: str, url: str) -> None:
    r = httpx.post(f"{url}/v2/repository/models/digit_odd/unload", timeout=60)
    ready = httpx.get(f"{url}/health/ready").status_code
    print(f"{label}: anonymous unload {r.status_code}; readiness then {ready}")


def run(label: str, root: Path, count: int) -> None:
    """Each case against a server of its own, over a copy of its own: a case that breaks a
    build (the baseline's hostile uploads) does not decide the next one's figures."""
    cases = [
        lambda url, address, pid, scratch: anonymous_unload(label, url),
        lambda url, address, pid, scratch: hostile_uploads(label, url, pid, scratch),
        lambda url, address, pid, scratch: tensorproto(label, address, pid),
        lambda url, address, pid, scratch: idle_grpc(label, address),
        lambda url, address, pid, scratch: rejected(label, address, pid),
        lambda url, address, pid, scratch: cycles(label, url, pid, count),
    ]
    for case in cases:
        scratch = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
        models = scratch / "models"
        shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns(".*"))
        port, grpc_port = free_port(), free_port()
        proc, _ = start(
            "cnn-serve",
            "digit_odd",
            port,
            root,
            CNN_SERVE_MODEL_DIR=str(models),
            CNN_SERVE_GRPC_PORT=str(grpc_port),
            CNN_SERVE_MODEL_UPLOADS="true",
            CNN_SERVE_MODEL_CONTROL="explicit",
            CNN_SERVE_ADMIN_KEYS=ADMIN,
            CNN_SERVE_MODEL_POLL_SECONDS="0",
        )
        try:
            case(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", proc.pid, scratch)
        except (httpx.HTTPError, grpc.RpcError) as exc:
            print(f"{label}: the case ended with {type(exc).__name__}: {str(exc)[:120]}")
        finally:
            proc.kill()
            proc.wait(30)
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--baseline", metavar="GIT_REF")
    args = parser.parse_args()
    with worktree(args.baseline) as baseline:
        run("cnn-serve", ROOT, args.cycles)
        if baseline is not None:
            run("baseline", baseline, args.cycles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
