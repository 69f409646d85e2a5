"""The Open Inference Protocol (V2) over HTTP: what ``tritonclient.http``, KServe and
Triton-speaking tools call. Thin: :mod:`service.oip` translates, the server computes. Errors
are ``{"error": "..."}``.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic_core import to_json
from starlette.responses import Response

from service import __version__, inference, oip, uploads
from service.apis import OIP
from service.deps import RegistryDep, ServerDep
from service.model import Status
from service.schemas import VERSION_OR_LABEL, Responses, inline
from service.server import Server

router = APIRouter(prefix=OIP.prefix, tags=[OIP.tag])
ModelName = Annotated[str, Path(description="e.g. digit_odd or cifar10")]
VersionOrLabel = Annotated[str, Path(pattern=VERSION_OR_LABEL, description="a number or a label")]
ERRORS: Responses = {
    code: {"description": '{"error": "..."}'} for code in (400, 404, 413, 415, 503)
}
ADMIN_ERRORS: Responses = {
    **ERRORS,
    401: {"description": "no admin key"},
    403: {"description": "model control is off, or the key is an inference key"},
}


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


@router.get("", summary="Server metadata", response_model=oip.ServerMetadata)
async def server_metadata() -> dict:
    return {"name": "cnn-serve", "version": __version__, "extensions": oip.EXTENSIONS}


@router.get("/health/live", summary="The server is up", response_model=Live)
async def live() -> dict:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="The default model serves (503 until then)",
    response_model=Ready,
    responses={503: {"model": Ready}},
)
async def ready(registry: RegistryDep, request: Request):
    return _readiness({"ready": registry.ready and not request.app.state.drain.active})


@router.get(
    "/models/stats",
    summary="Statistics of every served version",
    responses=ERRORS,
    response_model=oip.ModelStatisticsResponse,
)
async def all_statistics(registry: RegistryDep) -> dict:
    return oip.model_statistics(registry, None, None)


@router.get(
    "/models/{name}/stats",
    summary="Statistics of a model's versions",
    responses=ERRORS,
    response_model=oip.ModelStatisticsResponse,
)
async def model_statistics(name: ModelName, registry: RegistryDep) -> dict:
    return oip.model_statistics(registry, name, None)


@router.get(
    "/models/{name}/versions/{version}/stats",
    summary="Statistics of one version: counts and times, as Triton's extension",
    response_model=oip.ModelStatisticsResponse,
    responses=ERRORS,
)
async def version_statistics(
    name: ModelName, version: VersionOrLabel, registry: RegistryDep
) -> dict:
    return oip.model_statistics(registry, name, version)


@router.get(
    "/models/{name}",
    summary="Model metadata: inputs, outputs, versions",
    response_model=oip.ModelMetadataResponse,
    responses=ERRORS,
)
async def model_metadata(name: ModelName, registry: RegistryDep) -> dict:
    versions = registry.versions(name)
    model = registry.runner(name).model
    return oip.model_metadata(name, sorted(versions), model.metadata)


@router.get(
    "/models/{name}/config",
    summary="Triton's model configuration: max_batch_size, inputs, outputs",
    response_model=oip.ModelConfig,
    responses=ERRORS,
)
async def model_config(name: ModelName, server: ServerDep) -> dict:
    return _config(server, name, None)


@router.get(
    "/models/{name}/versions/{version}/config",
    summary="Triton's model configuration of one version",
    response_model=oip.ModelConfig,
    responses=ERRORS,
)
async def version_config(name: ModelName, version: VersionOrLabel, server: ServerDep) -> dict:
    return _config(server, name, version)


def _config(server: Server, name: str, version: str | None) -> dict:
    model = server.registry.runner(name, version).model
    return oip.model_config(name, model.metadata, server.max_images(model))


@router.get(
    "/models/{name}/versions/{version}",
    summary="Metadata of one version",
    response_model=oip.ModelMetadataResponse,
    responses=ERRORS,
)
async def version_metadata(name: ModelName, version: VersionOrLabel, registry: RegistryDep) -> dict:
    model = registry.runner(name, version).model
    return oip.model_metadata(name, [model.version], model.metadata)


@router.get(
    "/models/{name}/ready",
    summary="The newest version serves (503 if not)",
    response_model=ModelReady,
    responses={**ERRORS, 503: {"model": ModelReady}},
)
async def model_ready(name: ModelName, registry: RegistryDep):
    return _readiness({"name": name, "ready": _serves(registry, name, None)})


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="The version serves (503 if not)",
    response_model=ModelReady,
    responses={**ERRORS, 503: {"model": ModelReady}},
)
async def version_ready(name: ModelName, version: VersionOrLabel, registry: RegistryDep):
    return _readiness({"name": name, "ready": _serves(registry, name, version)})


def _serves(registry, name: str, version: str | None) -> bool:
    """404 for a model or version the service does not have (Triton says 400 here, 404 on
    metadata, config and infer: tests/conformance names the difference); else whether it
    serves."""
    return registry.get(name, version).status is Status.ready


def _readiness(body: dict):
    return body if body["ready"] else JSONResponse(body, status_code=503)


INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON; or, with Triton's binary tensor data extension, the same JSON "
        "(its length in the Inference-Header-Content-Length header) followed by the tensors' "
        "bytes, which JSON Schema cannot describe.",
        "content": {
            "application/json": {
                "schema": inline(oip.InferenceRequest.model_json_schema()),
                "example": {
                    "id": "1",
                    "inputs": [
                        {
                            "name": oip.BYTES_INPUT,
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["iVBORw0KGgo... (a PNG in base64)"],
                        }
                    ],
                },
            },
        },
    }
}


@router.post(
    "/models/{name}/infer",
    summary="Infer with the newest version",
    response_model=oip.InferenceResponse,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer(name: ModelName, request: Request, server: ServerDep) -> Response:
    return await _infer(request, server, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Infer with one version",
    response_model=oip.InferenceResponse,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
async def version_infer(
    name: ModelName, version: VersionOrLabel, request: Request, server: ServerDep
) -> Response:
    return await _infer(request, server, name, version)


async def _infer(request: Request, server: Server, name: str, version: str | None) -> Response:
    runner = server.registry.runner(name, version)  # 404 / 503 before the body is read
    async with uploads.admit(request, server):
        parsed = oip.parse(await request.body(), request.headers)
        meta = runner.model.metadata
        chosen = oip.requested_outputs(parsed, meta)
        model_input = oip.model_input(parsed, meta, server.max_images(runner.model))
        outputs = await inference.infer(server, runner, model_input, request.is_disconnected)
    header, binary = oip.answer(parsed, runner.model, outputs, chosen)
    head = to_json(header)
    if not binary:
        return Response(head, media_type="application/json")
    return Response(
        b"".join([head, *binary]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


class RepositoryIndexRequest(BaseModel):
    ready: bool = Field(False, strict=True, description="only the versions that serve")


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, LOADING or UNAVAILABLE")
    reason: str = ""


@router.post(
    "/repository/index",
    response_model=list[RepositoryEntry],
    responses=ERRORS,
    summary="Every model version in the repository and its state (Triton's model "
    "repository extension)",
)
async def repository_index(
    registry: RegistryDep, body: RepositoryIndexRequest | None = None
) -> list[dict]:
    return registry.index(ready_only=bool(body and body.ready))


@router.post(
    "/repository/models/{name}/load",
    responses=ADMIN_ERRORS,
    summary="Read the repository and serve the model (again, after an unload); with "
    "CNN_SERVE_MODEL_CONTROL=explicit and an admin key",
)
async def repository_load(name: ModelName, registry: RegistryDep) -> dict:
    await registry.load_now(name)
    return {}


@router.post(
    "/repository/models/{name}/unload",
    responses=ADMIN_ERRORS,
    summary="Stop serving every version of the model (its files stay); with "
    "CNN_SERVE_MODEL_CONTROL=explicit and an admin key",
)
async def repository_unload(name: ModelName, registry: RegistryDep) -> dict:
    await registry.unload_now(name)
    return {}
