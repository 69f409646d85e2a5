"""TF Serving's PredictionService over gRPC, through ``tensorflow-serving-api``'s stub as its
``resnet_client_grpc`` example uses it."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.service.handwriting import draw_digit, encode
from tests.service.rpc.test_oip import DIGITS, mnist_pixels


@pytest.fixture(scope="module")
def stub(served):
    channel = grpc.insecure_channel(served.grpc)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def predict_request(name: str = "digit_odd", **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value)
    return request


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_predict_reads_image_files_by_the_signatures_input_name(stub):
    request = predict_request(image=tf.make_tensor_proto(DIGITS, shape=[len(DIGITS)]))
    reply = stub.Predict(request, timeout=30)
    digits = tf.make_ndarray(reply.outputs["digit"])
    assert list(digits.argmax(axis=1)) == list(range(10))
    assert tf.make_ndarray(reply.outputs["odd"]).shape == (10, 1)
    assert (reply.model_spec.name, reply.model_spec.version.value) == ("digit_odd", 1)
    assert reply.model_spec.signature_name == "serving_default"


def test_predict_takes_pixels_and_filters_outputs(stub, models_dir):
    pixels = mnist_pixels(models_dir)[4:6]
    request = predict_request(image=tf.make_tensor_proto(pixels))
    request.output_filter.append("digit")
    request.model_spec.version.value = 1
    reply = stub.Predict(request, timeout=30)
    assert list(reply.outputs) == ["digit"]
    assert list(tf.make_ndarray(reply.outputs["digit"]).argmax(axis=1)) == [4, 5]


def test_predict_refusals_have_their_codes(stub):
    image = tf.make_tensor_proto(DIGITS[:1], shape=[1])
    request = predict_request(image=image)
    request.model_spec.signature_name = "feature_maps"
    assert code_of(lambda: stub.Predict(request, timeout=30)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: stub.Predict(predict_request("nope", image=image), timeout=30)) == (
        grpc.StatusCode.NOT_FOUND
    )
    request = predict_request(image=image)
    request.model_spec.version.value = 42
    assert code_of(lambda: stub.Predict(request, timeout=30)) == grpc.StatusCode.NOT_FOUND
    wrong = tf.make_tensor_proto(np.zeros((1, 28, 28), np.float32))
    assert code_of(lambda: stub.Predict(predict_request(image=wrong), timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # one value declared to fill 10^9 floats: refused before anything is allocated
    filled = tf.make_tensor_proto(np.float32(0.5), shape=[1000, 1000, 1000])
    assert code_of(lambda: stub.Predict(predict_request(image=filled), timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code_of(
        lambda: stub.Predict(predict_request(colour=image, image=image), timeout=30)
    ) == (grpc.StatusCode.INVALID_ARGUMENT)


def test_model_metadata_describes_the_serving_signature(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "cifar10"
    request.metadata_field.append("signature_def")
    reply = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    (name,) = signature.inputs
    dims = [d.size for d in signature.inputs[name].tensor_shape.dim]
    assert dims == [-1, 32, 32, 3]
    assert [d.size for d in signature.outputs["class"].tensor_shape.dim] == [-1, 10]


def test_classify_answers_the_first_heads_labels(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "digit_odd"
    for digit in (2, 9):
        example = example_pb2.Example()
        example.features.feature["image_bytes"].CopyFrom(
            feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[encode(draw_digit(digit))]))
        )
        request.input.example_list.examples.append(example)
    reply = stub.Classify(request, timeout=30)
    results = reply.result.classifications
    assert len(results) == 2
    best = [max(r.classes, key=lambda c: c.score).label for r in results]
    assert best == ["2", "9"] and len(results[0].classes) == 10
