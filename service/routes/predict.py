"""``POST /predict``, the hot path.

Served as a plain Starlette route: the body is read once and parsed by
:func:`service.uploads.parse_form`, and the answer is serialised once from plain dicts. This
skips FastAPI's per-request dependency, form and response-model machinery, which cost more
than a third of the request budget under load (measured with py-spy and wrk; bench/).
FastAPI still documents the operation: :data:`DOCUMENTED` is an ``APIRoute`` over the same
endpoint that only feeds the OpenAPI schema.
"""

from fastapi.routing import APIRoute
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from service import inference
from service.schemas import UPLOAD_ERRORS, PredictParams, PredictResponse
from service.uploads import parse_form


async def predict(request: Request) -> Response:
    state = request.app.state
    form = parse_form(await request.body(), request.headers.get("content-type"))
    result = await inference.predict(state.registry, state.settings, form.files,
                                     inference.predict_params(form),
                                     is_gone=request.is_disconnected)
    request.state.model = result["model"]  # labels this request's metrics
    return Response(to_json(result), media_type="application/json")


BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary",
                                             "contentMediaType": "application/octet-stream"},
                 "description": "PNG, JPEG, GIF, BMP, WebP or TIFF; repeat the field for "
                                "several images"},
        **PredictParams.model_json_schema()["properties"],
    }}}}}}
DOCUMENTED = APIRoute(
    "/predict", predict, methods=["POST"], tags=["inference"], response_model=PredictResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=BODY, summary="Classify one or several uploaded images")
