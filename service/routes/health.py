from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import RegistryDep
from service.model import Status
from service.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health, summary="The process is up")
async def live() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Health, summary="Models are loaded and serving",
            responses={503: {"model": Health}})
async def ready(registry: RegistryDep):
    models = {name: sorted(v for v, m in versions.items() if m.status is Status.ready)
              for name, versions in registry.models.items()}
    body = Health(status="ready" if registry.ready else "not_ready", models=models)
    return body if registry.ready else JSONResponse(body.model_dump(), status_code=503)
