from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from service import inference
from service.deps import RegistryDep, SettingsDep
from service.schemas import ErrorResponse, PredictResponse

router = APIRouter(tags=["inference"])

ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}


@router.post("/predict", response_model=PredictResponse, responses=ERRORS,
             summary="Classify one or several uploaded images")
async def predict(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    file: Annotated[list[UploadFile], File(description="PNG, JPEG, GIF, BMP, WebP or TIFF; "
                                                       "repeat the field for several images")],
    model: Annotated[str | None, Form(description="model name (default: the service's)",
                                                examples=["digit_odd"])] = None,
    version: Annotated[int | None, Form(ge=1, description="default: newest ready")] = None,
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
) -> Response:
    result = await inference.predict(registry, settings, file, model, version, top_k,
                                     is_gone=request.is_disconnected)
    request.state.model = result.model  # labels this request's metrics
    # built from validated parts: serialise once, skip FastAPI's re-validation
    return Response(result.model_dump_json(), media_type="application/json")
