"""Both gRPC services fuzzed over a socket: whatever a client puts in the messages, the call
succeeds or fails with a client's status code, never UNKNOWN or INTERNAL."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.service.rpc.test_oip import DIGITS

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SERVER_FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

names = st.sampled_from(["image", "image_bytes", "digit", "", "x" * 300])
datatypes = st.sampled_from(["FP32", "BYTES", "FP16", "INT8", "", "fp32"])
shapes = st.lists(st.integers(min_value=-3, max_value=2**40), max_size=6)
raws = st.one_of(
    st.binary(max_size=64),
    st.just(np.zeros((1, 28, 28, 1), np.float32).tobytes()),
    st.just(b"\x05\x00\x00\x00hello"),
    st.just(len(DIGITS[0]).to_bytes(4, "little") + DIGITS[0]),
)
parameters = st.dictionaries(
    st.sampled_from(["classification", "binary_data", "x"]),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), st.text(max_size=5)),
    max_size=2,
)


def _set(parameter, value) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    else:
        parameter.string_param = value


@pytest.fixture(scope="module")
def stubs(served):
    with grpc.insecure_channel(served.grpc) as channel:
        yield (
            service_pb2_grpc.GRPCInferenceServiceStub(channel),
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
        )


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@FUZZ
@given(
    model=st.sampled_from(["digit_odd", "cifar10", "nope", ""]),
    version=st.sampled_from(["", "1", "0", "-1", "stable", "99999999999999999999"]),
    inputs=st.lists(st.tuples(names, datatypes, shapes, raws, st.booleans()), max_size=3),
    outputs=st.lists(st.tuples(st.sampled_from(["digit", "odd", "nope"]), parameters), max_size=3),
    fp32=st.lists(st.floats(width=32, allow_nan=True), max_size=16),
)
def test_model_infer_never_fails_as_a_server_fault(stubs, model, version, inputs, outputs, fp32):
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, raw, typed in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if typed:
            tensor.contents.fp32_contents.extend(fp32)
            tensor.contents.bytes_contents.append(raw)
        else:
            request.raw_input_contents.append(raw)
    for name, given_parameters in outputs:
        output = request.outputs.add(name=name)
        for key, value in given_parameters.items():
            _set(output.parameters[key], value)
    assert code_of(lambda: stubs[0].ModelInfer(request, timeout=30)) not in SERVER_FAULTS


@FUZZ
@given(
    name=names,
    dtype=st.sampled_from(
        [types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT8, types_pb2.DT_BOOL, 99]
    ),
    dims=st.lists(st.integers(min_value=-2, max_value=2**40), max_size=5),
    content=st.binary(max_size=64),
    floats=st.lists(st.floats(width=32, allow_nan=True), max_size=8),
    strings=st.lists(st.binary(max_size=16), max_size=3),
    signature=st.sampled_from(["", "serving_default", "other"]),
)
@example(  # a data type this TensorFlow has no name for
    name="image", dtype=99, dims=[], content=b"", floats=[], strings=[], signature=""
)
def test_predict_never_fails_as_a_server_fault(
    stubs, name, dtype, dims, content, floats, strings, signature
):
    tensor = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
        ),
        tensor_content=content,
        float_val=floats,
        string_val=strings,
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digit_odd"
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tensor)
    assert code_of(lambda: stubs[1].Predict(request, timeout=30)) not in SERVER_FAULTS
