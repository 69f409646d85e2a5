import asyncio
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from service import featuremaps, inference, model_uploads, uploads
from service.deps import RegistryDep, ServerDep, SettingsDep
from service.errors import SampleNotFound, clip
from service.model import ServedModel
from service.registry import ModelRegistry
from service.schemas import (
    UPLOAD_ERRORS,
    VERSION_OR_LABEL,
    ErrorResponse,
    ExplainParams,
    ExplainResponse,
    FeatureMapsParams,
    FeatureMapsResponse,
    HeadSummary,
    ModelDetail,
    ModelList,
    ModelState,
    ModelSummary,
    ModelUploadParams,
    VersionDetail,
    VersionStatus,
    upload_body,
)
from training import samples
from training.metadata import OutputSpec

S = TypeVar("S", bound=ModelState)
router = APIRouter(prefix="/models", tags=["models"])
ModelName = Annotated[str, Path(description="e.g. digit_odd or cifar10")]
VersionPath = Annotated[str, Path(pattern=VERSION_OR_LABEL, description="a number or a label")]


def _status(m: ServedModel) -> VersionStatus:
    return VersionStatus(
        version=m.version,
        status=m.status.value,
        error=m.error,
        device=m.device,
        load_seconds=m.load_seconds,
    )


def _summary(registry: ModelRegistry, name: str, schema: type[S], **extra) -> S:
    versions = registry.versions(name)
    default = registry.get(name)
    return schema(
        name=name,
        default_version=default.version,
        labels=registry.settings.version_labels.get(name, {}),
        ready=any(m.status.value == "ready" for m in versions.values()),
        versions=[_status(versions[v]) for v in sorted(versions)],
        input=default.public_metadata.input if default.public_metadata else None,
        **extra,
    )


def _heads(outputs: list[OutputSpec]) -> list[HeadSummary]:
    """Heads as a listing shows them: a model's labels may be thousands of names."""
    return [HeadSummary(name=o.name, kind=o.kind, classes=len(o.labels)) for o in outputs]


@router.get("", response_model=ModelList, summary="Every model, its versions and readiness")
async def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelList:
    return ModelList(
        device=registry.device,
        default_model=settings.default_model,
        model_uploads=settings.model_uploads,
        models=[
            _summary(registry, n, ModelSummary, outputs=_heads(_outputs(registry, n)))
            for n in sorted(registry.models)
        ],
    )


@router.get(
    "/{name}",
    response_model=ModelDetail,
    responses={404: {"model": ErrorResponse}},
    summary="A model: versions and the default version's metadata and layer table",
)
async def get_model(name: ModelName, registry: RegistryDep) -> ModelDetail:
    return _summary(
        registry,
        name,
        ModelDetail,
        outputs=_outputs(registry, name),
        metadata=registry.get(name).public_metadata,
    )


def _outputs(registry: ModelRegistry, name: str) -> list[OutputSpec]:
    meta = registry.get(name).public_metadata
    return meta.outputs if meta else []


@router.get(
    "/{name}/versions/{version}",
    response_model=VersionDetail,
    responses={404: {"model": ErrorResponse}},
    summary="One version: metadata and layer table (parameters include biases)",
)
async def get_version(
    name: ModelName, version: VersionPath, registry: RegistryDep
) -> VersionDetail:
    m = registry.get(name, version)
    meta = m.public_metadata
    return VersionDetail(
        **_status(m).model_dump(),
        name=name,
        metadata=meta,
        layers=meta.layers if meta else [],
        total_params=meta.total_params if meta else None,
        samples=await asyncio.to_thread(samples.listed, m.path),
    )


@router.get(
    "/{name}/versions/{version}/samples/{sample}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorResponse}},
    summary="One of the version's sample images (PNG)",
)
async def get_sample(
    name: ModelName,
    version: VersionPath,
    sample: Annotated[str, Path(pattern=f"^{samples.NAME.pattern}$", examples=["ship.png"])],
    registry: RegistryDep,
) -> FileResponse:
    m = registry.get(name, version)
    if sample not in await asyncio.to_thread(samples.listed, m.path):
        raise SampleNotFound(f"model {name!r} v{m.version} has no sample {clip(sample)}")
    return FileResponse(m.path / samples.SAMPLES_DIR / sample, media_type="image/png")


@router.post(
    "/{name}/feature-maps",
    response_model=FeatureMapsResponse,
    responses={
        **UPLOAD_ERRORS,
        200: {
            "content": {"application/octet-stream": {}},
            "description": "JSON, or with format=npz the raw float activations",
        },
    },
    openapi_extra=upload_body(FeatureMapsParams),
    summary="What every layer makes of an image: statistics and a picture per layer",
)
async def feature_maps(name: ModelName, request: Request, server: ServerDep) -> Response:
    """The answer's memory is reserved before anything is computed and held until it is
    sent (413 over the per-request limit, 503 when the process budget stays short)."""
    async with uploads.received(request, server) as form:
        params = uploads.params(form, FeatureMapsParams, request)
        runner = server.registry.runner(name, params.version)
        layers, reserved = await inference.reserve_feature_maps(server, runner, form.files, params)
        try:
            acts = await inference.activations(server, runner, form.files, layers)
            if params.format == "npz":
                body = await run_in_threadpool(featuremaps.to_npz, acts.layers)
                kind, headers = (
                    "application/octet-stream",
                    {
                        "Content-Disposition": f'attachment; filename="{runner.model.name}'
                        f'-v{acts.version}-activations.npz"'
                    },
                )
            else:  # rendered and serialised off the event loop: tens of MB for big batches
                body = await run_in_threadpool(
                    lambda: to_json(inference.render_feature_maps(acts, params.scaling))
                )
                kind, headers = "application/json", None
        except BaseException:
            inference.released_memory(server, reserved)
            raise
    return Sent(
        body,
        media_type=kind,
        headers=headers,
        then=lambda: inference.released_memory(server, reserved),
    )


class Sent(Response):
    """A response that calls ``then`` once it has been sent, or failed to be."""

    def __init__(self, *args, then, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.then = then

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.then()


@router.post(
    "/{name}/explain",
    response_model=ExplainResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=upload_body(ExplainParams),
    summary="Grad-CAM: where in the image a head found the evidence for a class",
)
async def explain(name: ModelName, request: Request, server: ServerDep) -> Response:
    async with uploads.received(request, server) as form:
        params = uploads.params(form, ExplainParams, request)
        return Response(
            to_json(await inference.explain(server, form.files, name, params)),
            media_type="application/json",
        )


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "description": "the model: .keras or .h5",
                        },
                        "labels": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "text/plain",
                            "description": "one label per line, line N = class N",
                        },
                        **ModelUploadParams.model_json_schema()["properties"],
                    },
                }
            }
        },
    }
}


@router.post(
    "/{name}/versions",
    response_model=VersionDetail,
    status_code=201,
    responses={
        202: {"model": VersionDetail, "description": "still loading"},
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        409: {
            "model": ErrorResponse,
            "description": "the version exists, or the model holds "
            "as many as it may, or another import is writing it",
        },
        413: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
        507: {"model": ErrorResponse, "description": "the repository is full"},
    },
    openapi_extra=UPLOAD_BODY,
    summary="Upload a Keras model (.keras/.h5) as a new version (uploads on; an admin key)",
)
async def upload_version(name: ModelName, request: Request, server: ServerDep):
    """What ``cnn-serve import`` does, over HTTP: 201 once the version serves, 202 while it
    still loads; a model that cannot be served is a 400 that says why, leaving nothing."""
    model = await model_uploads.upload(server, request, name)
    detail = await get_version(name, str(model.version), server.registry)
    return JSONResponse(
        detail.model_dump(mode="json"), status_code=201 if model.status.value == "ready" else 202
    )


RELOAD_WAIT_S = 30.0


@router.post(
    "/{name}/reload",
    response_model=ModelDetail,
    responses={
        202: {"model": ModelDetail, "description": "still loading"},
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    },
    summary="Read the model directory now: load new versions, retire removed ones "
    "(CNN_SERVE_MODEL_CONTROL=explicit; an admin key)",
)
async def reload(name: ModelName, registry: RegistryDep):
    """Waits for the loads up to RELOAD_WAIT_S; after that answers 202 with the versions as
    they are (loading), and the loads carry on."""
    try:
        await asyncio.wait_for(asyncio.shield(registry.sync_soon()), RELOAD_WAIT_S)
    except TimeoutError:
        detail = await get_model(name, registry)
        return JSONResponse(detail.model_dump(mode="json"), status_code=202)
    return await get_model(name, registry)
