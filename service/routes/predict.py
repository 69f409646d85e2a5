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

from service import inference, uploads
from service.core import Core
from service.schemas import UPLOAD_ERRORS, PredictParams, PredictResponse, upload_body


async def predict(request: Request) -> Response:
    core: Core = request.app.state.core
    async with uploads.received(request, core) as form:
        params = uploads.params(form, PredictParams, request)
        result = await inference.predict(core, form.files, params, is_gone=request.is_disconnected)
    request.state.model = result["model"]  # labels this request's metrics
    return Response(to_json(result), media_type="application/json")


DOCUMENTED = APIRoute(
    "/predict", predict, methods=["POST"], tags=["inference"], response_model=PredictResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=upload_body(PredictParams), summary="Classify one or several uploaded images")
