"""TensorFlow Serving's REST API (v1): model status, metadata, ``:predict``, ``:classify`` and
``:regress``, so clients and scripts written for TF Serving work unchanged. Thin:
:mod:`service.tfserving` translates, the server (registry, budgets, preprocessing, batcher)
computes. Errors are ``{"error": ...}``.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.convertors import Convertor, register_url_convertor

from service import inference, tfserving, uploads
from service.apis import TF_SERVING
from service.deps import RegistryDep, ServerDep
from service.schemas import IMAGE_FILE, Responses, numbers
from service.server import Server
from service.settings import LABEL
from service.tensors import may_hold_booleans


class ModelNameConvertor(Convertor[str]):
    """A model name stops at ':' so ``/v1/models/m:predict`` never matches ``/v1/models/{m}``
    (which made a GET there a 405 that advertised GET)."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model", ModelNameConvertor())
router = APIRouter(prefix="/v1/models", tags=[TF_SERVING.tag])
ModelName = Annotated[str, Path(description="e.g. digit_odd or cifar10")]
VersionNumber = Annotated[int, Path(ge=1)]
Label = Annotated[str, Path(pattern=LABEL, description="a version label, e.g. stable")]
ERRORS: Responses = {code: {"description": '{"error": "..."}'} for code in (400, 404, 413, 503)}


@router.get("/{name:model}", summary="Status of every version", responses=ERRORS)
async def status(name: ModelName, registry: RegistryDep) -> dict:
    versions = registry.versions(name)
    return {
        "model_version_status": [
            tfserving.version_status(versions[v]) for v in sorted(versions, reverse=True)
        ]
    }


@router.get(
    "/{name:model}/versions/{version:int}", summary="Status of one version", responses=ERRORS
)
async def version_status(name: ModelName, version: VersionNumber, registry: RegistryDep) -> dict:
    return {"model_version_status": [tfserving.version_status(registry.get(name, version))]}


@router.get(
    "/{name:model}/labels/{label:model}", summary="Status of the labelled version", responses=ERRORS
)
async def label_status(name: ModelName, label: Label, registry: RegistryDep) -> dict:
    return {"model_version_status": [tfserving.version_status(registry.get(name, label))]}


@router.get("/{name:model}/metadata", summary="Signature of the newest version", responses=ERRORS)
async def metadata(name: ModelName, registry: RegistryDep) -> dict:
    return tfserving.metadata(registry.runner(name).model)


@router.get(
    "/{name:model}/versions/{version:int}/metadata",
    summary="Signature of one version",
    responses=ERRORS,
)
async def version_metadata(name: ModelName, version: VersionNumber, registry: RegistryDep) -> dict:
    return tfserving.metadata(registry.runner(name, version).model)


@router.get(
    "/{name:model}/labels/{label:model}/metadata",
    responses=ERRORS,
    summary="Signature of the labelled version",
)
async def label_metadata(name: ModelName, label: Label, registry: RegistryDep) -> dict:
    return tfserving.metadata(registry.runner(name, label).model)


# an instance: [H, W, C] pixels, or an image file; a batch: a list of either
SIGNATURE_NAME = {"type": "string", "enum": ["", "serving_default"]}
INSTANCE = {"anyOf": [numbers(3), IMAGE_FILE]}
BATCH = {"anyOf": [numbers(4), {"type": "array", "minItems": 1, "items": IMAGE_FILE}]}


def named(value: dict) -> dict:
    """``{"<the model's input name>": value}``."""
    return {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "propertyNames": {"not": {"const": "b64"}},
        "additionalProperties": value,
    }


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
                    "properties": {
                        "signature_name": SIGNATURE_NAME,
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"anyOf": [INSTANCE, named(INSTANCE)]},
                            "description": "row format: [H, W, C] pixels in [0, 1] per instance, "
                            'or {"b64": "<image file>"}; either may be wrapped as '
                            '{"<input name>": ...}',
                        },
                        "inputs": {
                            "anyOf": [BATCH, named(BATCH)],
                            "description": 'columnar format: the batch, or {"<input name>": batch}',
                        },
                    },
                },
                "example": {"instances": [{"b64": "iVBORw0KGgo..."}]},
            }
        },
    }
}


@router.post(
    "/{name:model}:predict",
    summary="Predict (row or columnar format)",
    responses=ERRORS,
    openapi_extra=PREDICT_BODY,
)
async def predict(name: ModelName, request: Request, server: ServerDep) -> dict:
    return await _infer(request, server, name, None)


@router.post(
    "/{name:model}/versions/{version:int}:predict",
    summary="Predict with one version",
    responses=ERRORS,
    openapi_extra=PREDICT_BODY,
)
async def version_predict(
    name: ModelName, version: VersionNumber, request: Request, server: ServerDep
) -> dict:
    return await _infer(request, server, name, version)


@router.post(
    "/{name:model}/labels/{label:model}:predict",
    responses=ERRORS,
    summary="Predict with the labelled version",
    openapi_extra=PREDICT_BODY,
)
async def label_predict(name: ModelName, label: Label, request: Request, server: ServerDep) -> dict:
    return await _infer(request, server, name, label)


EXAMPLES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["examples"],
                    "properties": {
                        "signature_name": SIGNATURE_NAME,
                        "examples": {
                            "type": "array",
                            "minItems": 1,
                            "items": named(INSTANCE),
                            "description": '{"image": pixels or {"b64": "<image file>"}} '
                            "per example",
                        },
                    },
                },
                "example": {"examples": [{"image": {"b64": "iVBORw0KGgo..."}}]},
            }
        },
    }
}


def _example_routes(verb: str, summary: str) -> None:
    """``:classify`` or ``:regress`` at the model, a version and a label (same body)."""

    async def latest(name: ModelName, request: Request, server: ServerDep) -> dict:
        return await _infer(request, server, name, None, verb)

    async def version(
        name: ModelName, version: VersionNumber, request: Request, server: ServerDep
    ) -> dict:
        return await _infer(request, server, name, version, verb)

    async def labelled(name: ModelName, label: Label, request: Request, server: ServerDep) -> dict:
        return await _infer(request, server, name, label, verb)

    for path, endpoint, title in (
        (f"/{{name:model}}:{verb}", latest, summary),
        (f"/{{name:model}}/versions/{{version:int}}:{verb}", version, f"{verb} with one version"),
        (
            f"/{{name:model}}/labels/{{label:model}}:{verb}",
            labelled,
            f"{verb} with the labelled version",
        ),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            name=f"{endpoint.__name__}_{verb}",
            summary=title[0].upper() + title[1:],
            responses=ERRORS,
            openapi_extra=EXAMPLES_BODY,
        )


_example_routes("classify", "Classify: [label, score] pairs of the first class head, per example")
_example_routes("regress", "Regress: the value of the first regression head, per example")
ANSWERS = {"classify": tfserving.classification, "regress": tfserving.regression}


async def _infer(
    request: Request, server: Server, name: str, version: int | str | None, verb: str = ""
) -> dict:
    runner = server.registry.runner(name, version)  # 404 before the body is read
    if verb == "regress":
        tfserving.regression_head(runner.model.metadata)  # 400 before the body is read
    async with uploads.admit(request, server):
        raw = await request.body()
        body = tfserving.parse(raw, verb)
        meta = runner.model.metadata
        model_input = tfserving.model_input(
            body, meta, server.max_images(runner.model), may_hold_booleans(raw)
        )
        outputs = await inference.infer(server, runner, model_input, request.is_disconnected)
    if verb:
        return ANSWERS[verb](meta, outputs)
    return tfserving.answer(body, meta, outputs)
