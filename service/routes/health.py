from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.deps import RegistryDep
from service.model import Status
from service.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health, summary="The process is up")
async def live() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Health,
    summary="Models are loaded and serving (503 while loading or draining)",
    responses={503: {"model": Health}},
)
async def ready(registry: RegistryDep, request: Request):
    models = {
        name: sorted(v for v, m in versions.items() if m.status is Status.ready)
        for name, versions in registry.models.items()
    }
    if request.app.state.drain.active:
        status = "draining"
    else:
        status = "ready" if registry.ready else "not_ready"
    body = Health(status=status, models=models)
    return body if status == "ready" else JSONResponse(body.model_dump(), status_code=503)
