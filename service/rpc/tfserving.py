"""TensorFlow Serving's gRPC API (``tensorflow.serving.PredictionService``): what its
``PredictionServiceStub`` clients call (e.g. TF Serving's ``resnet_client_grpc``). Thin: a
``TensorProto`` input becomes the model's input (pixels, or a string tensor of image files
that get ``/predict``'s preprocessing), outputs go back as ``TensorProto``; metadata and
classifications as :mod:`service.tfserving` gives them over REST.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from service import inference, tfserving
from service.batching import Runner
from service.errors import BadRequest, clip
from service.model_input import ModelInput, check_shape, of_files, of_pixels
from service.oip import BYTES_INPUT
from service.server import Server
from service.uploads import Upload
from training.metadata import ModelMetadata

VALUES = {  # a pixel type -> the TensorProto field holding its values when not packed
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT64: "int64_val",
}
SIGNATURE_DEF = "signature_def"
DTYPE_NAMES = set(types_pb2.DataType.values())  # a client may send any number


def _version(spec: Any) -> str | None:
    """A ``ModelSpec``'s version: its number, its label, or None for the newest."""
    if spec.HasField("version"):
        return str(spec.version.value)
    return spec.version_label or None


def _signature(spec: Any) -> None:
    if (spec.signature_name or tfserving.SIGNATURE) != tfserving.SIGNATURE:
        raise BadRequest(
            f"no signature named {clip(spec.signature_name)}; this model serves "
            f"{tfserving.SIGNATURE!r}"
        )


def tensor_input(
    inputs: Mapping[str, Any], meta: ModelMetadata, limit: int, max_bytes: int
) -> ModelInput:
    """The request's one input tensor, by the signature's input name: numbers are pixels
    [N, H, W, C]; a string tensor [N] holds image files (also accepted as ``image_bytes``)."""
    if len(inputs) != 1:
        raise BadRequest(f"send one input, {meta.input.name!r}; got {clip(sorted(inputs))}")
    ((name, proto),) = inputs.items()
    if name not in (meta.input.name, BYTES_INPUT):
        raise BadRequest(f"unknown input {clip(name)}; the model's input is {meta.input.name!r}")
    shape = [d.size for d in proto.tensor_shape.dim]
    count = math.prod(shape)
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in shape) or count > max_bytes:
        raise BadRequest(f"input {clip(name)}: shape {clip(shape)} is not a tensor's shape")
    if proto.dtype == types_pb2.DT_STRING:
        if len(proto.string_val) != count or len(shape) > 2 or shape[1:] not in ([], [1]):
            raise BadRequest(
                f"input {clip(name)}: a string tensor [N] of image files, one element each; "
                f"got shape {shape} holding {len(proto.string_val)}"
            )
        files = [Upload(f"image {i}", data) for i, data in enumerate(proto.string_val)]
        return of_files(files, limit)
    if proto.dtype not in VALUES:
        kind = types_pb2.DataType.Name(proto.dtype) if proto.dtype in DTYPE_NAMES else proto.dtype
        raise BadRequest(
            f"input {clip(name)} is {kind}; send pixels as DT_FLOAT or image files as DT_STRING"
        )
    if name != meta.input.name:
        raise BadRequest(f"input {BYTES_INPUT!r} holds image files (DT_STRING)")
    check_shape(shape, meta.input, limit, f"input {name!r}")  # before any allocation
    itemsize = np.dtype(tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype).itemsize
    if proto.tensor_content and len(proto.tensor_content) != count * itemsize:
        raise BadRequest(
            f"input {clip(name)} of shape {shape} is {count * itemsize} bytes; "
            f"tensor_content holds {len(proto.tensor_content)}"
        )
    # TensorFlow would repeat the last value to fill the shape: a client sends them all
    if not proto.tensor_content and len(getattr(proto, VALUES[proto.dtype])) != count:
        raise BadRequest(
            f"input {clip(name)} of shape {shape} needs {count} values; got "
            f"{len(getattr(proto, VALUES[proto.dtype]))}"
        )
    pixels = tf.make_ndarray(proto) if count else np.zeros(shape, np.float32)
    return of_pixels(pixels.astype(np.float32), meta.input, limit, f"input {name!r}")


def _signature_def(meta: ModelMetadata) -> Any:
    """The serving signature as TF Serving's ``GetModelMetadata`` describes it."""

    def info(name: str, dims: list[int], dtype: int) -> Any:
        return meta_graph_pb2.TensorInfo(
            name=name,
            dtype=dtype,
            tensor_shape=tf.TensorShape([None, *dims]).as_proto(),
        )

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs[meta.input.name].CopyFrom(
        info(meta.input.name, meta.input.shape, tf.as_dtype(meta.input.dtype).as_datatype_enum)
    )
    for output in meta.outputs:
        signature.outputs[output.name].CopyFrom(
            info(output.name, [output.units], types_pb2.DT_FLOAT)
        )
    return signature


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: Server) -> None:
        self.server = server

    def _runner(self, spec: Any) -> Runner:
        _signature(spec)
        return self.server.registry.runner(spec.name, _version(spec))

    async def _infer(self, runner: Runner, request: Any, model_input_of) -> dict:
        server = self.server
        async with server.admission.reserve(requests=1, body_bytes=max(request.ByteSize(), 1)):
            model_input = model_input_of(runner.model.metadata, server.max_images(runner.model))
            return await inference.infer(server, runner, model_input)

    def _spec(self, response_spec: Any, runner: Runner) -> None:
        response_spec.name = runner.model.name
        response_spec.version.value = runner.model.version
        response_spec.signature_name = tfserving.SIGNATURE

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        runner = self._runner(request.model_spec)
        meta = runner.model.metadata
        names = list(request.output_filter) or [o.name for o in meta.outputs]
        unknown = sorted(set(names) - {o.name for o in meta.outputs})
        if unknown:
            raise BadRequest(
                f"unknown output(s) {clip(unknown)} in output_filter; the model's outputs "
                f"are {[o.name for o in meta.outputs]}"
            )
        max_bytes = self.server.settings.grpc_max_message_bytes
        outputs = await self._infer(
            runner,
            request,
            lambda meta, limit: tensor_input(request.inputs, meta, limit, max_bytes),
        )
        response = predict_pb2.PredictResponse()
        self._spec(response.model_spec, runner)
        for name in names:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        runner = self._runner(request.model_spec)
        fields = list(request.metadata_field)
        if fields != [SIGNATURE_DEF]:
            raise BadRequest(f"metadata_field lists {SIGNATURE_DEF!r} (the only one served)")
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def[tfserving.SIGNATURE].CopyFrom(
            _signature_def(runner.model.metadata)
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._spec(response.model_spec, runner)
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response

    async def _examples(self, runner: Runner, request: Any) -> dict:
        """The outputs for a Classify or Regress request's examples: each ``tf.Example``
        carries one image, its file as bytes or its pixels as floats, under the input's name
        (or ``image_bytes``)."""
        max_bytes = self.server.settings.grpc_max_message_bytes

        def from_examples(meta: ModelMetadata, limit: int) -> ModelInput:
            return tensor_input(
                {name: tensor for name, tensor in [example_tensor(request.input, meta)]},
                meta,
                limit,
                max_bytes,
            )

        return await self._infer(runner, request, from_examples)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Classes are the first class head's labels (:func:`service.tfserving.classification`)."""
        runner = self._runner(request.model_spec)
        outputs = await self._examples(runner, request)
        scores = tfserving.classification(runner.model.metadata, outputs)["results"]
        response = classification_pb2.ClassificationResponse()
        self._spec(response.model_spec, runner)
        for row in scores:
            result = response.result.classifications.add()
            for label, score in row:
                result.classes.add(label=label, score=score)
        return response

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The first regression head's value per example (:func:`service.tfserving.regression`)."""
        runner = self._runner(request.model_spec)
        tfserving.regression_head(runner.model.metadata)  # refused before the model runs
        outputs = await self._examples(runner, request)
        response = regression_pb2.RegressionResponse()
        self._spec(response.model_spec, runner)
        for value in tfserving.regression(runner.model.metadata, outputs)["results"]:
            response.result.regressions.add(value=value)
        return response


def example_tensor(given: Any, meta: ModelMetadata) -> tuple[str, Any]:
    """A Classify request's examples as one input tensor (name, TensorProto)."""
    if given.WhichOneof("kind") != "example_list" or not given.example_list.examples:
        raise BadRequest("send the images as input.example_list.examples")
    files, pixels = [], []
    for example in given.example_list.examples:
        features = example.features.feature
        if set(features) - {meta.input.name, BYTES_INPUT} or len(features) != 1:
            raise BadRequest(
                f"each example has one feature, {meta.input.name!r} (float pixels or image "
                f"file bytes) or {BYTES_INPUT!r}; got {clip(sorted(features))}"
            )
        (feature,) = features.values()
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list" and len(feature.bytes_list.value) == 1:
            files.append(feature.bytes_list.value[0])
        elif kind == "float_list":
            pixels.append(np.asarray(feature.float_list.value, np.float32))
        else:
            raise BadRequest("a feature holds one image file (bytes) or its pixels (floats)")
    if files and pixels:
        raise BadRequest("mix of image files and pixels in one request")
    if files:
        return BYTES_INPUT, tf.make_tensor_proto(files, shape=[len(files)])
    if len({p.size for p in pixels}) != 1 or pixels[0].size != math.prod(meta.input.shape):
        raise BadRequest(f"each example's pixels are {meta.input.shape} floats, flattened")
    batch = np.stack(pixels).reshape(len(pixels), *meta.input.shape)
    return meta.input.name, tf.make_tensor_proto(batch)
