"""KServe V2 / Triton over gRPC, spoken to by ``tritonclient.grpc`` as its users do."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from service.preprocess import prepare
from tests.conftest import committed_versions
from tests.service.conftest import oip_fp32
from tests.service.handwriting import draw_digit, encode
from training.metadata import ModelMetadata

DIGITS = [encode(draw_digit(d)) for d in range(10)]


def files_input(files: list[bytes]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image_bytes", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    return tensor


def pixels_input(pixels: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels.astype(np.float32))
    return tensor


def mnist_pixels(models_dir) -> np.ndarray:
    spec = ModelMetadata.read(committed_versions("digit_odd")[-1]).input
    return np.stack([prepare(png, spec, 10**6) for png in DIGITS])


def code_of(call) -> grpc.StatusCode:
    """The status code a tritonclient call failed with (it reports "StatusCode.NAME")."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return grpc.StatusCode[caught.value.status().removeprefix("StatusCode.")]


def test_health_and_server_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("digit_odd") and triton.is_model_ready("digit_odd", "1")
    meta = triton.get_server_metadata(as_json=True)
    assert meta["name"] == "cnn-serve"
    assert {"binary_tensor_data", "classification"} <= set(meta["extensions"])


def test_model_metadata_lists_both_inputs_and_every_version(triton):
    meta = triton.get_model_metadata("cifar10_resnet", as_json=True)
    assert meta["versions"] == [str(p.name) for p in committed_versions("cifar10_resnet")]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("image", "FP32", ["-1", "32", "32", "3"]),
        ("image_bytes", "BYTES", ["-1"]),
    ]
    one = triton.get_model_metadata("cifar10_resnet", "2", as_json=True)
    assert one["versions"] == ["2"]


def test_image_files_are_read_right(triton):
    result = triton.infer("digit_odd", [files_input(DIGITS)])
    digits = result.as_numpy("digit")
    assert digits.shape == (10, 10) and list(digits.argmax(axis=1)) == list(range(10))
    odd = result.as_numpy("odd")[:, 0] >= 0.5
    assert list(odd) == [d % 2 == 1 for d in range(10)]
    assert result.get_response().model_version == "1"


def test_fp32_pixels_answer_as_rest_does(triton, served, models_dir):
    import httpx

    pixels = mnist_pixels(models_dir)
    grpc_digits = triton.infer("digit_odd", [pixels_input(pixels)]).as_numpy("digit")
    rest = httpx.post(
        f"http://{served.http}/v2/models/digit_odd/infer",
        json=oip_fp32(pixels),
    ).json()
    (digit,) = [o for o in rest["outputs"] if o["name"] == "digit"]
    np.testing.assert_allclose(grpc_digits.ravel(), digit["data"], rtol=1e-5)
    assert list(grpc_digits.argmax(axis=1)) == list(range(10))


def test_typed_contents_are_read_as_raw_ones(served, models_dir):
    """A client that sends fp32_contents / bytes_contents (no raw_input_contents)."""
    pixels = mnist_pixels(models_dir)[:3]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(served.grpc))
    request = service_pb2.ModelInferRequest(model_name="digit_odd")
    tensor = request.inputs.add(name="image", datatype="FP32", shape=pixels.shape)
    tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    reply = stub.ModelInfer(request, timeout=30)
    (digit,) = [i for i, o in enumerate(reply.outputs) if o.name == "digit"]
    scores = np.frombuffer(reply.raw_output_contents[digit], "<f4").reshape(3, 10)
    assert list(scores.argmax(axis=1)) == [0, 1, 2]
    request = service_pb2.ModelInferRequest(model_name="digit_odd")
    tensor = request.inputs.add(name="image_bytes", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend(DIGITS[7:9])
    reply = stub.ModelInfer(request, timeout=30)
    scores = np.frombuffer(reply.raw_output_contents[digit], "<f4").reshape(2, 10)
    assert list(scores.argmax(axis=1)) == [7, 8]


def test_classification_answers_top_n_as_triton_does(triton):
    outputs = [
        grpcclient.InferRequestedOutput("digit", class_count=3),
        grpcclient.InferRequestedOutput("odd", class_count=2),
    ]
    result = triton.infer("digit_odd", [files_input(DIGITS[3:5])], outputs=outputs)
    digit, odd = result.as_numpy("digit"), result.as_numpy("odd")
    assert digit.shape == (2, 3) and odd.shape == (2, 2)
    for row, expected in zip(digit, (3, 4)):
        scores = [float(item.split(b":")[0]) for item in row]
        assert scores == sorted(scores, reverse=True) and 0.5 < scores[0] <= 1.0
        assert row[0].split(b":")[1:] == [str(expected).encode()] * 2  # index and label
    assert [row[0].split(b":")[2] for row in odd] == [b"odd", b"even"]
    alone = triton.infer("digit_odd", [files_input(DIGITS[:1])], outputs=outputs[:1])
    assert [o.name for o in alone.get_response().outputs] == ["digit"]  # only what was asked


def test_versions_and_labels_choose_the_model(triton):
    pixels = np.zeros((1, 32, 32, 3), np.float32)
    for version in ("1", "3"):
        reply = triton.infer("cifar10_resnet", [pixels_input(pixels)], model_version=version)
        assert reply.get_response().model_version == version
    labelled = triton.infer("digit_odd", [files_input(DIGITS[:1])], model_version="stable")
    assert labelled.get_response().model_version == "1"


def test_client_mistakes_get_their_status_codes(triton):
    pixels = np.zeros((1, 28, 28, 1), np.float32)
    assert code_of(lambda: triton.infer("nope", [pixels_input(pixels)])) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code_of(
        lambda: triton.infer("digit_odd", [pixels_input(pixels)], model_version="9")
    ) == (grpc.StatusCode.NOT_FOUND)
    wrong_shape = np.zeros((1, 27, 28, 1), np.float32)
    assert code_of(lambda: triton.infer("digit_odd", [pixels_input(wrong_shape)])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    nan = np.full((1, 28, 28, 1), np.nan, np.float32)
    assert code_of(lambda: triton.infer("digit_odd", [pixels_input(nan)])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code_of(lambda: triton.infer("digit_odd", [files_input([b"not an image"])])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code_of(
        lambda: triton.infer(
            "digit_odd",
            [pixels_input(pixels)],
            outputs=[grpcclient.InferRequestedOutput("colour")],
        )
    ) == (grpc.StatusCode.INVALID_ARGUMENT)
    assert code_of(
        lambda: triton.infer("digit_odd", [pixels_input(pixels), files_input(DIGITS[:1])])
    ) == (grpc.StatusCode.INVALID_ARGUMENT)


def test_a_lying_shape_or_too_many_images_is_refused(served, triton):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(served.grpc))
    request = service_pb2.ModelInferRequest(model_name="digit_odd")
    request.inputs.add(name="image", datatype="FP32", shape=[2**40, 28, 28, 1])
    request.raw_input_contents.append(b"\0" * 16)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = service_pb2.ModelInferRequest(model_name="digit_odd")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 28, 28, 1])
    request.raw_input_contents.extend([b"\0" * 3136, b"\0" * 3136])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # cifar10_resnet takes at most 256 images a call (its metadata's max_batch_size): as the
    # REST API's 400
    many = np.zeros((257, 32, 32, 3), np.float32)
    assert code_of(lambda: triton.infer("cifar10_resnet", [pixels_input(many)])) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_a_message_over_the_size_limit_is_resource_exhausted(served):
    limit = served.app.state.server.settings.grpc_max_message_bytes
    stub = service_pb2_grpc.GRPCInferenceServiceStub(
        grpc.insecure_channel(served.grpc, options=[("grpc.max_send_message_length", -1)])
    )
    request = service_pb2.ModelInferRequest(model_name="digit_odd")
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\0" * (limit + 1))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
