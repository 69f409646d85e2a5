"""Swagger UI and ReDoc that work with no internet: assets served by the service itself."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.apis import is_probe
from service.settings import Settings

OPENAPI_URL = "/openapi.json"  # FastAPI's default, which the app keeps
SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"
SAME_ORIGIN_ONLY = (
    "default-src 'self'; img-src 'self' data: blob:; font-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' blob:; "
    "worker-src 'self' blob:"
)


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Offline Swagger UI and ReDoc, and an OpenAPI schema whose file fields Swagger UI can
    fill in (and that asks for a key when ``settings`` require one)."""
    _mount_docs(app)
    app.openapi = _openapi(app, bool(settings.api_keys))  # type: ignore[method-assign]  # as FastAPI's docs do


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI and ReDoc from assets shipped in the package: no CDN, works offline."""
    app.mount("/static/docs", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=app.openapi_url or OPENAPI_URL,
            title=f"{app.title} - ReDoc",
            redoc_js_url="/static/docs/redoc.standalone.js",
            redoc_favicon_url="/static/docs/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = SAME_ORIGIN_ONLY  # ReDoc links a CDN logo
        return page


def _mark_file_fields(node: object) -> None:
    """Add OAS 3.0's ``format: binary`` beside 3.1's ``contentMediaType`` on upload fields:
    Swagger UI only draws file pickers for arrays of files from the former
    (swagger-ui#10825, fastapi#15069)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("contentMediaType") == (
            "application/octet-stream"
        ):
            node.setdefault("format", "binary")
        for value in node.values():
            _mark_file_fields(value)
    elif isinstance(node, list):
        for value in node:
            _mark_file_fields(value)


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key as a bearer token"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _declare_keys(schema: dict) -> None:
    """Every operation needs a key (either header), except the health probes: Swagger UI's
    Authorize button then sends it with "Try it out"."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    schema["security"] = [{"bearer": []}, {"apiKey": []}]
    for path, operations in schema["paths"].items():
        if is_probe(path):
            for operation in operations.values():
                operation["security"] = []


def _openapi(app: FastAPI, keys: bool):
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _mark_file_fields(schema)
            if keys:
                _declare_keys(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
