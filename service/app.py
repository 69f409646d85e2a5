"""The application factory: ``create_app(settings)``; models load in the lifespan.

``app = create_app()`` at the bottom is what ``uvicorn service.app:app`` serves.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service import metrics
from service.errors import install_handlers
from service.middleware import BodySizeLimit, RequestMetrics
from service.registry import ModelRegistry
from service.routes import health, models, predict
from service.settings import Settings, get_settings

SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"
SAME_ORIGIN_ONLY = ("default-src 'self'; img-src 'self' data: blob:; font-src 'self' data:; "
                    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' blob:; "
                    "worker-src 'self' blob:")
DESCRIPTION = """Classify images with convolutional networks and see what every layer makes
of them. Upload with `POST /predict`; ask for `POST /models/{name}/feature-maps` to get each
layer's activations as pictures and statistics."""


def _lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry = ModelRegistry(settings)
        app.state.registry = registry
        await registry.load_all()
        try:
            yield
        finally:
            await registry.close()

    return lifespan


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from assets shipped in the package: no CDN, works offline."""
    app.mount("/static/docs", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url="/static/docs/redoc.standalone.js",
                              redoc_favicon_url="/static/docs/favicon.png",
                              with_google_fonts=False)
        page.headers["Content-Security-Policy"] = SAME_ORIGIN_ONLY  # ReDoc links a CDN logo
        return page


def _mark_file_fields(node: object) -> None:
    """Add OAS 3.0's ``format: binary`` beside 3.1's ``contentMediaType`` on upload fields:
    Swagger UI only draws file pickers for arrays of files from the former
    (swagger-ui#10825, fastapi#15069)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("contentMediaType") == (
                "application/octet-stream"):
            node.setdefault("format", "binary")
        for value in node.values():
            _mark_file_fields(value)
    elif isinstance(node, list):
        for value in node:
            _mark_file_fields(value)


def _openapi_with_file_pickers(app: FastAPI):
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            _mark_file_fields(build())
        return app.openapi_schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = FastAPI(title="cnn-serve", version="0.1.0", description=DESCRIPTION,
                  lifespan=_lifespan(settings), docs_url=None, redoc_url=None)
    app.state.settings = settings
    install_handlers(app)
    for router in (predict.router, models.router, health.router):
        app.include_router(router)
    _mount_docs(app)
    app.openapi = _openapi_with_file_pickers(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, media_type = metrics.exposition()
        return Response(body, media_type=media_type)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/docs")

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.add_middleware(RequestMetrics)
    return app


def __getattr__(name: str):
    """``service.app:app`` for uvicorn, built on first access (settings validated then)."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
