"""The gRPC server as operators and tools meet it: health checks that follow readiness and
drain, reflection for grpcurl, request IDs, metrics, API keys, and one batcher shared with
the REST front doors."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.errors import Overloaded
from service.rpc.gate import retry_hint
from service.rpc.server import MAX_WATCHES
from tests.service.conftest import oip_fp32
from tests.service.handwriting import draw_digit
from tests.service.rpc.conftest import grpc_serving
from tests.service.rpc.test_oip import DIGITS

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def eventually(condition, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def samples(http: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(httpx.get(f"http://{http}/metrics").text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= set(ls))


@pytest.fixture(scope="module")
def channel(served):
    with grpc.insecure_channel(served.grpc) as channel:
        yield channel


def test_health_follows_readiness_and_drain(served, channel):
    for service in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"):
        assert check(channel, service) == SERVING
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    drain = served.app.state.drain
    drain.active = True
    try:
        assert eventually(lambda: check(channel) == NOT_SERVING)
        assert not stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
    finally:
        drain.active = False
    assert eventually(lambda: check(channel) == SERVING)
    with pytest.raises(grpc.RpcError) as caught:
        check(channel, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watches_are_bounded_so_they_cannot_take_every_call_slot(served):
    """Each Watch holds a call slot while it lasts: a fifth at once is refused, and a slot
    comes back when a watcher leaves."""
    with grpc.insecure_channel(served.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        watches = [stub.Watch(request, timeout=30) for _ in range(MAX_WATCHES)]
        assert [next(w).status for w in watches] == [SERVING] * MAX_WATCHES
        extra = stub.Watch(request, timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            next(extra)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert check(channel) == SERVING  # Check is not a watch
        watches.pop().cancel()

        def watch_again() -> bool:
            again = stub.Watch(request, timeout=30)
            try:
                watches.append(again)
                return next(again).status == SERVING
            except grpc.RpcError:
                return False

        assert eventually(watch_again)
        for watch in watches:
            watch.cancel()


def test_reflection_lists_every_service(channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "grpc.health.v1.Health",
    } <= services


def test_request_ids_are_echoed_in_trailing_metadata(channel):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ServerLiveRequest()
    _, call = stub.ServerLive.with_call(request, metadata=(("x-request-id", "trace-42"),))
    assert ("x-request-id", "trace-42") in call.trailing_metadata()
    _, call = stub.ServerLive.with_call(request, metadata=(("x-request-id", "bad id!"),))
    (made,) = [v for k, v in call.trailing_metadata() if k == "x-request-id"]
    assert made != "bad id!" and len(made) == 32
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name="nope"), metadata=(("x-request-id", "t-7"),)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", "t-7") in caught.value.trailing_metadata()


def test_calls_are_counted_by_method_protocol_and_status(served, channel):
    before = samples(served.http)
    client = grpcclient.InferenceServerClient(served.grpc)
    tensor = grpcclient.InferInput("image_bytes", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(DIGITS[:1], dtype=object))
    client.infer("digit_odd", [tensor])
    with pytest.raises(InferenceServerException):
        client.infer("nope", [tensor])
    after = samples(served.http)
    route = "/inference.GRPCInferenceService/ModelInfer"

    def grew(**labels) -> float:
        name = "cnn_serve_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew(route=route, protocol="oip_v2_grpc", status="OK") == 1
    assert grew(route=route, protocol="oip_v2_grpc", status="NOT_FOUND") == 1


def test_grpc_and_rest_requests_share_one_model_call(served):
    """digit_odd_plus gathers for a second: a gRPC, an OIP REST and a /predict request sent
    together are computed in one batch of three, and the statistics say so."""
    pixels = np.zeros((1, 28, 28, 1), np.float32)
    jpeg = io.BytesIO()
    draw_digit(4).save(jpeg, "JPEG")
    client = grpcclient.InferenceServerClient(served.grpc)

    def over_grpc() -> bool:
        tensor = grpcclient.InferInput("image", [1, 28, 28, 1], "FP32")
        tensor.set_data_from_numpy(pixels)
        return client.infer("digit_odd_plus", [tensor]).as_numpy("digit").shape == (1, 10)

    def over_oip() -> bool:
        url = f"http://{served.http}/v2/models/digit_odd_plus/infer"
        return httpx.post(url, json=oip_fp32(pixels), timeout=30).status_code == 200

    def over_predict() -> bool:
        url = f"http://{served.http}/predict"
        files = {"file": ("d.jpg", jpeg.getvalue())}
        reply = httpx.post(url, files=files, data={"model": "digit_odd_plus"}, timeout=30)
        return reply.status_code == 200

    def statistics() -> dict:  # Triton's statistics extension, as its client reads it
        stats = client.get_inference_statistics("digit_odd_plus", "1", as_json=True)
        (version,) = stats["model_stats"]  # as JSON, protobuf leaves out what is zero or empty
        batches = {
            int(b["batch_size"]): int(b["compute_infer"].get("count", 0))
            for b in version.get("batch_stats", [])
        }
        inference = version.get("inference_stats", {})
        return {
            "images": int(version.get("inference_count", 0)),
            "calls": int(version.get("execution_count", 0)),
            "answered": int(inference.get("success", {}).get("count", 0)),
            "queued": int(inference.get("queue", {}).get("count", 0)),
            "batches of 3": batches.get(3, 0),
        }

    stats_before, before = statistics(), samples(served.http)
    with ThreadPoolExecutor(3) as pool:
        assert all(pool.map(lambda send: send(), (over_grpc, over_oip, over_predict)))
    after, stats_after = samples(served.http), statistics()
    assert {k: stats_after[k] - stats_before[k] for k in stats_after} == {
        "images": 3,
        "calls": 1,
        "answered": 3,
        "queued": 3,
        "batches of 3": 1,
    }
    count = "cnn_serve_batch_size_count"
    total = "cnn_serve_batch_size_sum"
    assert (
        value(after, count, model="digit_odd_plus") - value(before, count, model="digit_odd_plus")
        == 1
    )
    assert (
        value(after, total, model="digit_odd_plus") - value(before, total, model="digit_odd_plus")
        == 3
    )


def test_overload_carries_the_retry_hint():
    assert retry_hint(Overloaded("busy")) == (
        ("retry-after", "1"),
        ("grpc-retry-pushback-ms", "1000"),
    )


@pytest.fixture(scope="module")
def keyed(models_dir):
    keys = {"api_keys": "cnn-serve-test-key-0123", "default_model": "cifar10"}
    with grpc_serving(models_dir, **keys) as served, grpc.insecure_channel(served.grpc) as channel:
        yield channel


def test_api_keys_guard_every_call_but_the_probes(keyed):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(keyed)
    metadata_request = service_pb2.ModelMetadataRequest(name="cifar10")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(metadata_request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "API key" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(metadata_request, metadata=(("x-api-key", "guess"),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for header in (
        ("authorization", "Bearer cnn-serve-test-key-0123"),
        ("x-api-key", "cnn-serve-test-key-0123"),
    ):
        assert (
            stub.ModelMetadata(metadata_request, metadata=(header,), timeout=10).name == "cifar10"
        )
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
    assert check(keyed) == SERVING
    assert (
        "inference.GRPCInferenceService" in ProtoReflectionDescriptorDatabase(keyed).get_services()
    )
