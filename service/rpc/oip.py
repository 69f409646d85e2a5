"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``): what
``tritonclient.grpc`` and the KServe SDK call. Thin: requests become :class:`service.oip`'s
input tensors and chosen outputs, the server computes, and outputs go back as raw contents
(as Triton answers; clients read them with ``as_numpy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import __version__, inference, oip
from service.drain import Drain
from service.errors import BadRequest, NotFound
from service.model import Status
from service.server import Server


def _version(text: str) -> str | None:
    """An empty version means the default one."""
    return text or None


def classes_of(parameters: Mapping[str, Any]) -> int | None:
    """An output's ``classification`` parameter (tritonclient's ``class_count``)."""
    if oip.CLASSIFICATION not in parameters:
        return None
    value = parameters[oip.CLASSIFICATION]
    if value.WhichOneof("parameter_choice") != "int64_param" or value.int64_param < 1:
        raise BadRequest("parameter 'classification' is an int64 of at least 1")
    return value.int64_param


def input_tensors(request: pb.ModelInferRequest) -> list[oip.InputTensor]:
    """The request's inputs, each with its raw contents (when sent) or typed contents."""
    raws = request.raw_input_contents
    if raws and len(raws) != len(request.inputs):
        raise BadRequest(
            f"{len(raws)} raw_input_contents for {len(request.inputs)} inputs; send one per "
            "input, in input order, or typed contents"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        contents = tensor.contents
        tensors.append(
            oip.InputTensor(
                tensor.name,
                tensor.datatype,
                list(tensor.shape),
                memoryview(raws[i]) if raws else None,
                partial(np.asarray, contents.fp32_contents, np.float32),
                partial(list, contents.bytes_contents),
            )
        )
    return tensors


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, server: Server, drain: Drain) -> None:
        self.server, self.drain = server, drain

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.server.registry.ready and not self.drain.active)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """``ready: false`` for a model or version that does not exist, as Triton answers
        (``if client.is_model_ready(name):`` must not raise)."""
        try:
            model = self.server.registry.get(request.name, _version(request.version))
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=model.status is Status.ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(
            name="cnn-serve", version=__version__, extensions=oip.EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        registry, version = self.server.registry, _version(request.version)
        model = registry.runner(request.name, version).model
        versions = [model.version] if version else sorted(registry.versions(request.name))
        described = oip.model_metadata(request.name, versions, model.metadata)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=described["name"],
            versions=described["versions"],
            platform=described["platform"],
            inputs=[tensor(**t) for t in described["inputs"]],
            outputs=[tensor(**t) for t in described["outputs"]],
        )

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = self.server.registry.runner(request.name, _version(request.version)).model
        config = oip.model_config(model.name, model.metadata, self.server.max_images(model))
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Every served version's (no name), a model's, or one version's."""
        stats = oip.model_statistics(
            self.server.registry, request.name or None, _version(request.version)
        )
        return json_format.ParseDict(
            stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        server = self.server
        runner = server.registry.runner(request.model_name, _version(request.model_version))
        size = sum(map(len, request.raw_input_contents)) or request.ByteSize()
        async with server.admission.reserve(requests=1, body_bytes=max(size, 1)):
            meta = runner.model.metadata
            asked = [oip.Chosen(o.name, True, classes_of(o.parameters)) for o in request.outputs]
            chosen = oip.choose(asked, meta, binary=True)
            limit = server.max_images(runner.model)
            model_input = oip.input_of(input_tensors(request), meta, limit)
            outputs = await inference.infer(server, runner, model_input)
        response = pb.ModelInferResponse(
            model_name=runner.model.name, model_version=str(runner.model.version), id=request.id
        )
        for output in chosen:
            datatype, values = oip.output_tensor(meta, outputs, output)
            response.outputs.add(name=output.name, datatype=datatype, shape=values.shape)
            response.raw_output_contents.append(oip.raw_contents(datatype, values))
        return response

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        index = self.server.registry.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index]
        )

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Reached only with model control on and an admin key (:class:`service.auth.Access`)."""
        await self.server.registry.load_now(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.server.registry.unload_now(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelStreamInfer(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        """Streaming calls pass the gate as they are: say UNIMPLEMENTED here, not through the
        generated servicer's exception (a logged traceback per call)."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ModelStreamInfer is not served")
