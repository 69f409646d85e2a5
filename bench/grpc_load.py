"""A gRPC load generator, the counterpart of wrk for bench.protocols: ``concurrency`` calls in
flight on one HTTP/2 channel, each sending the same serialised request (no per-call encoding,
as wrk sends a file), for ``duration`` seconds; req/s, p50/p99 and failed calls.

The bodies are what the protocols' clients send: ``ModelInferRequest`` with raw contents (as
``tritonclient.grpc`` sends them) and TF Serving's ``PredictRequest`` with ``tensor_content``.
"""

from __future__ import annotations

import asyncio
import struct
import time

import grpc
import numpy as np

OIP_INFER = "/inference.GRPCInferenceService/ModelInfer"
TFS_PREDICT = "/tensorflow.serving.PredictionService/Predict"
MAX_MESSAGE = 256 * 2**20


def oip_fp32(model: str, pixels: np.ndarray) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=pixels.shape)
    request.raw_input_contents.append(pixels.astype("<f4").tobytes())
    return request.SerializeToString()


def oip_files(model: str, files: list[bytes]) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[len(files)])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(f)) + f for f in files))
    return request.SerializeToString()


def tfs_fp32(model: str, pixels: np.ndarray) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(pixels.astype(np.float32)))
    return request.SerializeToString()


def check(target: str, method: str, body: bytes) -> None:
    """One call before the load: it must succeed."""
    with grpc.insecure_channel(target, options=_options()) as channel:
        channel.unary_unary(method)(body, timeout=60)


def drive(target: str, method: str, body: bytes, concurrency: int, duration: float) -> dict:
    return asyncio.run(_drive(target, method, body, concurrency, duration))


def _options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]


async def _drive(target: str, method: str, body: bytes, concurrency: int, duration: float) -> dict:
    latencies: list[float] = []
    failed = 0
    async with grpc.aio.insecure_channel(target, options=_options()) as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out
        start = time.perf_counter()
        stop = start + duration

        async def worker() -> None:
            nonlocal failed
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                try:
                    await call(body, timeout=30)
                except grpc.aio.AioRpcError:
                    failed += 1
                else:
                    latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "non2xx": failed,
    }
