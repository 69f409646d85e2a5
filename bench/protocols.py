"""Batches of 64 images through every API, against the model alone at batch 64.

    python -m bench.protocols [--model digit_odd] [--duration 10] [--concurrency 4] [--batch 64]
                              [--apis NAME ...] [--baseline GIT_REF]
                              [--kserve PYTHON] [--peer triton]

Starts ``cnn-serve`` (one worker, as the command runs it) and drives it with wrk, one request
body at a time, each carrying 64 images: the Open Inference Protocol with binary FP32 pixels
(as ``tritonclient.http`` sends them), with JSON pixels, and with binary BYTES PNG files; TF
Serving's REST API with JSON pixels (``instances``) and with ``{"b64": ...}`` PNGs; and the
native multipart ``/predict`` with 64 PNG files; and over gRPC (driven by
:mod:`bench.grpc_load`) the OIP with raw FP32 pixels and raw BYTES PNGs, and TF Serving's
Predict with FP32 ``tensor_content``. Prints images/s (req/s x 64), p50/p99 and non-2xx per
API, and each as a fraction of the model alone at the same batch size: its serving signature
called back to back in this process for 2 s just before and just after each API's load (the
server idle meanwhile), so the host's drift over a run (often +-20 % here) falls on both sides
of the ratio alike. ``--baseline REF`` also runs cnn-serve as of that git commit (from a
temporary worktree), in the same run.

``--kserve PYTHON`` also runs KServe's own model server (the ``kserve`` package, installed
for that interpreter, e.g. a virtualenv with ``kserve`` and ``tensorflow-cpu``) serving the
same SavedModel through a custom ``kserve.Model`` (bench/kserve_peer.py), REST and gRPC V2,
driven by the same clients with the same bodies.

``--peer triton`` also runs Triton Inference Server (PyTriton's ``tritonserver``, from
``.triton-venv``: ``deploy/triton-venv.sh --with-tensorflow``) serving the same SavedModel's
``serving_default`` signature bound as a PyTriton model with the same ``max_batch_size``
(bench/triton_peer.py; Triton's dynamic batcher on, as PyTriton configures it), over REST
(binary and JSON FP32) and gRPC (raw FP32). Single images: ``--batch 1 --concurrency 16``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date

import numpy as np

from bench import grpc_load
from bench.run import (
    BOUNDARY,
    ROOT,
    ModelAlone,
    free_port,
    latest,
    sample_image,
    start,
    worktree,
    wrk,
)

GRPC = "grpc"  # the content type of the gRPC rows: driven by bench.grpc_load


def _png_multipart(png: bytes, n: int) -> bytes:
    part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + png
        + b"\r\n"
    )
    return part * n + f"--{BOUNDARY}--\r\n".encode()


def requests(
    model: str, shape: list[int], batch: int
) -> dict[str, tuple[str, bytes, str | None, int | None]]:
    """API -> (path, body, content type, Inference-Header-Content-Length)."""
    pixels = np.random.default_rng(0).random((batch, *shape), np.float32)
    png = sample_image(model)
    oip = f"/v2/models/{model}/infer"
    tfs = f"/v1/models/{model}:predict"
    binary_out = {"binary_data_output": True}  # tritonclient's default when no outputs named

    def binary(tensor: dict, raw: bytes) -> tuple[bytes, int]:
        head = json.dumps(
            {
                "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                "parameters": binary_out,
            }
        ).encode()
        return head + raw, len(head)

    fp32_body, fp32_len = binary(
        {"name": "image", "shape": [batch, *shape], "datatype": "FP32"}, pixels.tobytes()
    )
    files = b"".join(struct.pack("<I", len(png)) + png for _ in range(batch))
    bytes_body, bytes_len = binary(
        {"name": "image_bytes", "shape": [batch], "datatype": "BYTES"}, files
    )
    json_body = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [batch, *shape],
                    "datatype": "FP32",
                    "data": pixels.ravel().tolist(),
                }
            ]
        }
    )
    b64 = base64.b64encode(png).decode()
    return {
        "OIP binary FP32": (oip, fp32_body, None, fp32_len),
        "OIP JSON FP32": (oip, json_body.encode(), "application/json", None),
        "OIP binary BYTES PNG": (oip, bytes_body, None, bytes_len),
        "TFS JSON instances": (
            tfs,
            json.dumps({"instances": pixels.tolist()}).encode(),
            "application/json",
            None,
        ),
        "TFS b64 PNG": (
            tfs,
            json.dumps({"instances": [{"b64": b64}] * batch}).encode(),
            "application/json",
            None,
        ),
        "native multipart PNG": (
            "/predict",
            _png_multipart(png, batch),
            f"multipart/form-data; boundary={BOUNDARY}",
            None,
        ),
        "gRPC OIP raw FP32": (grpc_load.OIP_INFER, grpc_load.oip_fp32(model, pixels), GRPC, None),
        "gRPC OIP raw BYTES PNG": (
            grpc_load.OIP_INFER,
            grpc_load.oip_files(model, [png] * batch),
            GRPC,
            None,
        ),
        "gRPC TFS FP32": (grpc_load.TFS_PREDICT, grpc_load.tfs_fp32(model, pixels), GRPC, None),
    }


def check(
    port: int, path: str, body: bytes, content_type: str | None, header_length: int | None
) -> None:
    """One request before the load: it must answer 200."""
    headers = {"Content-Type": content_type} if content_type else {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200, answer.read()[:300]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digit_odd")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="images per request")
    parser.add_argument(
        "--apis",
        nargs="+",
        help="only these, in this order (names as printed, e.g. 'OIP binary FP32')",
    )
    parser.add_argument("--baseline", metavar="GIT_REF")
    parser.add_argument(
        "--kserve", metavar="PYTHON", help="also run KServe's model server with this interpreter"
    )
    parser.add_argument(
        "--peer",
        choices=["triton"],
        action="append",
        default=[],
        help="also run Triton Inference Server (.triton-venv) on the same SavedModel",
    )
    args = parser.parse_args()
    shape = [28, 28, 1] if args.model == "digit_odd" else [32, 32, 3]
    bodies = requests(args.model, shape, args.batch)
    if args.apis:  # in the order given: the host's load drifts, so alternate orders to compare
        unknown = set(args.apis) - set(bodies)
        if unknown:
            parser.error(f"unknown API(s) {sorted(unknown)}; known: {list(bodies)}")
        bodies = {name: bodies[name] for name in args.apis}
    model = ModelAlone(args.model)
    args.alone = lambda: model.rate(args.batch)
    with worktree(args.baseline) as baseline:
        runs = {"cnn-serve": measure(ROOT, args, bodies)}
        if baseline is not None:
            runs["baseline"] = measure(baseline, args, bodies)
    if args.kserve:
        runs["kserve"] = measure_kserve(args, bodies)
    if "triton" in args.peer:
        runs["triton"] = measure_triton(args, bodies)
    print(
        f"\n## {args.model}: {args.batch} images per request, c={args.concurrency}  ({date.today()}, "
        f"{platform.machine()}, {os.cpu_count()} cores, wrk {args.duration}s, one worker)"
    )
    for server, results in runs.items():
        print(f"\n{server}")
        print(
            f"{'API':<24}{'body KB':>9}{'images/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'non-2xx':>9}{'model':>9}{'x model':>9}"
            + "".join(f"{'x ' + other[:6]:>10}" for other in others(server, runs))
        )
        for name, (size, run, alone) in results.items():
            rate = run["rps"] * args.batch
            versus = "".join(
                f"{run['rps'] / runs[other][name][1]['rps']:>10.2f}"
                if name in runs[other]
                else f"{'':>10}"
                for other in others(server, runs)
            )
            print(
                f"{name:<24}{size / 1024:>9.0f}{rate:>10,.0f}{run['p50']:>9.1f}"
                f"{run['p99']:>9.1f}{run['non2xx']:>9}{alone:>9,.0f}{rate / alone:>9.2f}{versus}"
            )
    print(f"\nmodel: the model alone at batch {args.batch}, images/s, before and after each row")
    return 0


def others(server: str, runs: dict) -> list[str]:
    """The servers cnn-serve's rows are compared with."""
    return [other for other in runs if other != server] if server == "cnn-serve" else []


def measure(root, args, bodies: dict) -> dict[str, tuple[int, dict, float]]:
    """cnn-serve from the source tree ``root``, every API's body in turn: (size, run, the
    model alone's images/s around it)."""
    port, grpc_port = free_port(), free_port()
    proc, _ = start("cnn-serve", args.model, port, root, CNN_SERVE_GRPC_PORT=str(grpc_port))
    try:
        return drive_all(args, bodies, port, grpc_port)
    finally:
        proc.terminate()
        proc.wait(10)


def measure_kserve(args, bodies: dict) -> dict[str, tuple[int, dict, float]]:
    """KServe's model server on the same SavedModel: the V2 bodies it can take."""
    port, grpc_port = free_port(), free_port()
    command = [args.kserve, str(ROOT / "bench" / "kserve_peer.py"), "--model_name", args.model]
    command += ["--model_dir", str(latest(args.model))]
    command += ["--http_port", str(port), "--grpc_port", str(grpc_port)]
    return measure_peer(args, bodies, command, KSERVE_APIS, port, grpc_port)


def measure_triton(args, bodies: dict) -> dict[str, tuple[int, dict, float]]:
    """Triton (PyTriton) on the same SavedModel: the OIP bodies of pixels."""
    python = ROOT / ".triton-venv" / "bin" / "python"
    if not python.exists():
        sys.exit(f"--peer triton needs {python}: deploy/triton-venv.sh --with-tensorflow")
    from service.settings import Settings
    from training.metadata import ModelMetadata

    meta = ModelMetadata.read(latest(args.model))
    spec = {
        "name": args.model,
        "max_batch_size": meta.max_batch_size or Settings().max_images_per_request,
        "input": [meta.input.name, meta.input.shape],
        "outputs": [[o.name, o.units] for o in meta.outputs],
    }
    port, grpc_port = free_port(), free_port()
    command = [str(python), str(ROOT / "bench" / "triton_peer.py"), json.dumps(spec)]
    command += [str(port), str(grpc_port), str(latest(args.model))]
    return measure_peer(args, bodies, command, TRITON_APIS, port, grpc_port)


def measure_peer(
    args, bodies: dict, command: list[str], apis: tuple[str, ...], port: int, grpc_port: int
) -> dict[str, tuple[int, dict, float]]:
    """Another server, started by ``command``, driven with the ``apis`` it takes once its
    model is ready (up to 2 minutes)."""
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/models/{args.model}/ready"
        for _ in range(240):
            try:
                if urllib.request.urlopen(url, timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        return drive_all(args, {k: v for k, v in bodies.items() if k in apis}, port, grpc_port)
    finally:
        proc.terminate()
        proc.wait(10)


# what KServe's V2 server takes: JSON FP32 over REST, raw FP32 over gRPC (it has no image
# decoding, TF Serving API or binary REST extension for a custom model)
KSERVE_APIS = ("OIP JSON FP32", "gRPC OIP raw FP32")
# Triton takes the binary extension too; image files would need a model that decodes them
TRITON_APIS = ("OIP binary FP32", "OIP JSON FP32", "gRPC OIP raw FP32")


def drive_all(args, bodies: dict, port: int, grpc_port: int) -> dict[str, tuple[int, dict, float]]:
    """Every body in turn, with the model alone measured just before and after each:
    (size, run, the model's mean images/s)."""
    results = {}
    for name, (path, body, ctype, length) in bodies.items():
        before = args.alone()
        run = drive(args, port, grpc_port, path, body, ctype, length)
        results[name] = (len(body), run, (before + args.alone()) / 2)
    return results


def drive(args, port: int, grpc_port: int, path: str, body: bytes, ctype, length) -> dict:
    """One API's load: REST by wrk, gRPC by bench.grpc_load."""
    if ctype == GRPC:
        target = f"127.0.0.1:{grpc_port}"
        grpc_load.check(target, path, body)
        return grpc_load.drive(target, path, body, args.concurrency, args.duration)
    check(port, path, body, ctype, length)
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        return wrk(
            port,
            f.name,
            args.concurrency,
            args.duration,
            timeout_s=10,
            path=path,
            content_type=ctype,
            header_length=length,
        )


if __name__ == "__main__":
    sys.exit(main())
