"""gRPC as a hostile client uses it: calls that never send their message, a few bytes that
declare a huge tensor, RPCs the server does not serve, metadata that is not ASCII, and the
repository RPCs that change what is served."""

from __future__ import annotations

import logging
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.service.rpc.conftest import grpc_serving
from tests.service.rpc.test_oip import DIGITS

SERVICE = "/inference.GRPCInferenceService/"
ADMIN, INFERENCE = "admin-key-0123456789abcdef", "inference-key-0123456789"


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def infer_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digit_odd")
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    request.inputs[0].contents.bytes_contents.append(DIGITS[7])
    return request


@contextmanager
def idle_calls(address: str, count: int, seconds: float = 30) -> Iterator[None]:
    """``count`` ModelInfer calls opened on a connection of their own that send nothing for
    ``seconds`` (or until the block ends)."""
    never = threading.Event()

    def silence():
        never.wait(seconds)
        yield from ()

    # a connection of its own, as another client's would be (channels of one process to one
    # address otherwise share one)
    own = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(address, options=own) as idle:
        opened = idle.stream_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        calls = [opened.future(silence(), timeout=seconds) for _ in range(count)]
        try:
            yield
        finally:
            never.set()
            for call in calls:
                call.cancel()


def huge_predict() -> predict_pb2.PredictRequest:
    """45 bytes: TF Serving's Predict with one DT_DOUBLE value and shape [41000000]."""
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_DOUBLE,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=41_000_000)]
        ),
        double_val=[0.5],
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digit_odd"
    request.inputs["image"].CopyFrom(proto)
    return request


def test_calls_that_never_send_their_message_lock_nobody_out(served):
    """40 ModelInfer calls that open and then send nothing (more than the 32 calls in
    progress the server allows) hold no slot: health Check and another client's inference
    still succeed at once. Before: RESOURCE_EXHAUSTED for everyone while they stayed open."""
    with idle_calls(served.grpc, 40), grpc.insecure_channel(served.grpc) as other:
        health = health_pb2_grpc.HealthStub(other)
        for _ in range(5):
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        answer = pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(infer_request(), timeout=10)
        assert answer.model_name == "digit_odd" and len(answer.outputs) == 2


def test_a_few_bytes_declaring_a_huge_tensor_allocate_nothing(served):
    """A 45-byte Predict (DT_DOUBLE, shape [41000000], one value): TensorFlow would fill the
    shape with that value (328 MB, then a float32 copy). Refused from its shape first."""
    request = huge_predict()
    assert request.ByteSize() < 64
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(served.grpc))
    tracemalloc.start()
    try:
        assert code_of(lambda: stub.Predict(request, timeout=10)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        # the right shape with too few values is refused too (TensorFlow would pad them)
        short = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (1, 28, 28, 1)]
            ),
            float_val=[0.5],
        )
        request.inputs["image"].CopyFrom(short)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "784 values" in caught.value.details()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB allocated"


def test_rpcs_not_served_are_unimplemented_without_a_traceback(served, caplog):
    caplog.set_level(logging.INFO)
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(served.grpc))
    for call, request in (
        (stub.CudaSharedMemoryStatus, pb.CudaSharedMemoryStatusRequest()),
        (stub.SystemSharedMemoryRegister, pb.SystemSharedMemoryRegisterRequest(name="x")),
        (stub.TraceSetting, pb.TraceSettingRequest()),
        (stub.LogSettings, pb.LogSettingsRequest()),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    stream = stub.ModelStreamInfer(iter([infer_request()]), timeout=10)
    assert code_of(lambda: list(stream)) == grpc.StatusCode.UNIMPLEMENTED
    assert not [r for r in caplog.records if r.exc_info], "a client's call logged a traceback"


@pytest.fixture(scope="module")
def managed_server(models_dir):
    """Model control on, an admin key and an inference key."""
    with grpc_serving(
        models_dir, model_control="explicit", admin_keys=ADMIN, api_keys=INFERENCE
    ) as served:
        yield served


@pytest.fixture(scope="module")
def managed_address(managed_server) -> str:
    return managed_server.grpc


@pytest.fixture(scope="module")
def managed(managed_address):
    with grpc.insecure_channel(managed_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_repository_rpcs_take_an_admin_key(managed):
    unload = pb.RepositoryModelUnloadRequest(model_name="cifar10")
    load = pb.RepositoryModelLoadRequest(model_name="cifar10")
    ready = pb.ModelReadyRequest(name="cifar10")
    as_admin, as_user = (("x-api-key", ADMIN),), (("authorization", f"Bearer {INFERENCE}"),)
    assert code_of(lambda: managed.RepositoryModelUnload(unload, timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert code_of(lambda: managed.RepositoryModelUnload(unload, metadata=as_user, timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert managed.ModelReady(ready, metadata=as_user, timeout=10).ready
    managed.RepositoryModelUnload(unload, metadata=as_admin, timeout=30)
    index = managed.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=as_user, timeout=10)
    assert ("cifar10", "UNAVAILABLE") in {(m.name, m.state) for m in index.models}
    managed.RepositoryModelLoad(load, metadata=as_admin, timeout=60)
    assert managed.ModelReady(ready, metadata=as_admin, timeout=10).ready  # admins infer too


def raw_call(address: str, method: str, message: bytes, headers: list) -> str:
    """One unary gRPC call over a bare HTTP/2 connection, with headers no grpc client would
    send; the answer's grpc-status."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", method),
                (":authority", address),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *headers,
            ],
        )
        conn.send_data(1, b"\0" + len(message).to_bytes(4, "big") + message, end_stream=True)
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection without a status"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    fields = {bytes(k): bytes(v) for k, v in event.headers}
                    if b"grpc-status" in fields:
                        return fields[b"grpc-status"].decode()
            sock.sendall(conn.data_to_send())


def test_metadata_that_is_not_ascii_is_a_bad_key_not_an_error(managed, managed_address):
    """UTF-8 in a key or request ID: UNAUTHENTICATED (16) like any wrong key, never UNKNOWN
    (2) from decoding it."""
    message = pb.ModelMetadataRequest(name="digit_odd").SerializeToString()
    for header in (
        (b"x-api-key", "ключ-ключ-ключ-ключ".encode()),
        (b"x-request-id", "идентификатор".encode()),
    ):
        status = raw_call(managed_address, SERVICE + "ModelMetadata", message, [header])
        assert status == str(grpc.StatusCode.UNAUTHENTICATED.value[0])
    as_user = [(b"x-api-key", INFERENCE.encode()), (b"x-request-id", "ид".encode())]
    assert raw_call(managed_address, SERVICE + "ModelMetadata", message, as_user) == "0"


def test_repository_control_is_refused_by_default(served):
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(served.grpc))
    with pytest.raises(grpc.RpcError) as caught:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="digit_odd"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "CNN_SERVE_MODEL_CONTROL" in caught.value.details()
    ready = stub.ModelReady(pb.ModelReadyRequest(name="digit_odd"), timeout=10)
    assert ready.ready  # nothing changed
