"""The application factory: ``create_app(settings)``; models load in the lifespan.

``app = create_app()`` at the bottom is what ``uvicorn service.app:app`` serves.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.routing import Route

from service import __version__, http_guard, logs, memory, metrics
from service.admission import Admission
from service.apis import OPENAPI_TAGS
from service.auth import Access
from service.decoding import Decoder
from service.docs import install_docs
from service.drain import Drain
from service.errors import install_handlers
from service.explorer import install_explorer
from service.gradcam import TracedCache
from service.middleware import RequestGate
from service.model_uploads import UPLOAD_PATH
from service.registry import ModelRegistry
from service.routes import health, models, oip, predict, tfserving
from service.rpc import server as rpc_server
from service.server import Server
from service.settings import Settings, get_settings, usable_cores

SWITCH_INTERVAL_S = 0.002
GC_THRESHOLDS = (20_000, 50, 50)  # CPython's defaults: (700, 10, 10)
DECODER_START_S = 30.0  # the decode processes, started beside the models, at most this late
DESCRIPTION = """Classify images with convolutional networks and see what every layer makes
of them. Upload with `POST /predict`; ask for `POST /models/{name}/feature-maps` to get each
layer's activations as pictures and statistics. Clients of the Open Inference Protocol
(tritonclient, KServe) and of TensorFlow Serving's REST API reach the same models under
`/v2` and `/v1`."""


def _lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry = ModelRegistry(settings)
        cores = usable_cores()
        decoder = Decoder(
            cores if settings.decode_processes < 0 else settings.decode_processes,
            settings.decode_threads or cores,
        )
        decoder.warm()  # the workers start while the models load
        heavy = ThreadPoolExecutor(1, thread_name_prefix="heavy")
        app.state.server = Server(
            registry,
            settings,
            Admission.from_settings(settings),
            decoder,
            heavy,
            TracedCache(settings.gradcam_cache_entries, settings.gradcam_cache_bytes),
            memory.Trimmer(),
        )
        await registry.load_all()
        await decoder.started(DECODER_START_S)
        # TensorFlow leaves ~10^6 long-lived objects; without this, every full collection
        # walks them all and stalls requests for 100+ ms (the p99 tail under load)
        gc.freeze()
        # thousands of requests in flight (overload) keep ~10^5 young objects alive; at the
        # default thresholds the collector then ran every few requests and walked them all,
        # halving goodput at 2048 clients (bench/overload.py: 0.44 -> 0.89 of c=32)
        gc.set_threshold(*GC_THRESHOLDS)
        # the inference thread needs the GIL for a moment after each model call; with the
        # default 5 ms switch interval a busy event loop makes it wait that long every time
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        memory.tune_allocator()  # megabyte arrays reused, not faulted in anew each request
        app.state.drain.install()
        grpc_door = await rpc_server.start(app.state.server, app.state.drain)
        poller = (
            asyncio.get_running_loop().create_task(
                registry.poll(settings.model_poll_seconds), name="model-poller"
            )
            if settings.model_poll_seconds > 0
            else None
        )
        # access lines collected in a quiet moment are written within a second
        flusher = asyncio.get_running_loop().create_task(
            logs.flush_access_every(1.0), name="access-log-flusher"
        )
        try:
            yield http_guard.lifespan_state(settings)
        finally:
            flusher.cancel()
            if poller is not None:
                poller.cancel()
            if grpc_door is not None:
                await grpc_door.stop(settings.shutdown_timeout_s)
            await registry.close()
            logs.flush_access()
            await decoder.close(settings.shutdown_timeout_s)
            heavy.shutdown(wait=False, cancel_futures=True)

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level, settings.log_format)
    logs.ACCESS.disabled = not settings.access_log
    app = FastAPI(
        title="cnn-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings),
        docs_url=None,
        redoc_url=None,
        openapi_tags=OPENAPI_TAGS,
        # metrics are Prometheus' (/metrics); FastAPI's own OpenTelemetry hooks
        # looked for global providers on every request (~3 % of the hot path)
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.drain = Drain(settings.drain_seconds)
    install_handlers(app)
    for router in (predict.router, models.router, health.router, oip.router, tfserving.router):
        app.include_router(router)
    install_docs(app, settings)
    install_explorer(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, media_type = metrics.exposition()
        return Response(body, media_type=media_type)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(
        RequestGate,
        drain=app.state.drain,
        body_limit=settings.max_upload_bytes,
        idle_s=settings.body_idle_timeout_s,
        total_s=settings.body_timeout_s,
        access=Access.from_settings(settings),
        model_uploads=(UPLOAD_PATH, settings.max_model_bytes) if settings.model_uploads else None,
        # past CORS, which would not see them
        direct=None if settings.cors_origins else _direct_routes(),
        handlers=app.exception_handlers,
    )
    return app


def _direct_routes() -> dict[tuple[str, str], Route]:
    """The hot path the request gate calls past the framework: ``POST /predict``."""
    return {("POST", r.path): r for r in predict.router.routes if isinstance(r, Route)}


def __getattr__(name: str):
    """``service.app:app`` for uvicorn, built on first access (settings validated then)."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
