from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import inference
from service.schemas import ErrorResponse, PredictParams, PredictResponse

router = APIRouter(tags=["inference"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}
# The hot path parses its own form (FastAPI's per-field Form machinery costs ~30 % of the
# request budget); the body is documented here so Swagger UI still offers the upload form.
BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary",
                                             "contentMediaType": "application/octet-stream"},
                 "description": "PNG, JPEG, GIF, BMP, WebP or TIFF; repeat the field for "
                                "several images"},
        **PredictParams.model_json_schema()["properties"],
    }}}}}}


@router.post("/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=BODY,
             summary="Classify one or several uploaded images")
async def predict(request: Request) -> Response:
    state = request.app.state  # not Depends(): resolving dependencies costs ~8 % per request
    async with request.form() as form:  # closes the uploaded files when done
        files, params = inference.predict_form(form)
        result = await inference.predict(state.registry, state.settings, files, params,
                                         is_gone=request.is_disconnected)
    request.state.model = result.model  # labels this request's metrics
    # built from validated parts: serialise once, skip FastAPI's re-validation
    return Response(result.model_dump_json(), media_type="application/json")
