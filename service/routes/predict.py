"""``POST /predict``, the hot path.

A FastAPI route over the raw ``Request`` (as KServe registers its endpoints): the body is read
once and parsed by :func:`service.uploads.parse_form`, and the answer is serialised once from
plain dicts. FastAPI's per-request form and response-model machinery cost more than a third of
the request budget under load (measured with py-spy and wrk; bench/); the OpenAPI
``requestBody`` and ``response_model`` document what the endpoint parses and returns.
"""

from fastapi import APIRouter
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from service import inference, uploads
from service.schemas import UPLOAD_ERRORS, PredictParams, PredictResponse, upload_body
from service.server import Server

router = APIRouter(tags=["inference"])


async def predict(request: Request) -> Response:
    server: Server = request.app.state.server
    async with uploads.received(request, server) as form:
        params = uploads.params(form, PredictParams, request)
        result = await inference.predict(
            server, form.files, params, is_gone=request.is_disconnected
        )
    return Response(to_json(result), media_type="application/json")


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    response_model=PredictResponse,
    responses=UPLOAD_ERRORS,
    openapi_extra=upload_body(PredictParams),
    summary="Classify one or several uploaded images",
)
