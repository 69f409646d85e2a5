"""The explorer page at ``/``: draw or upload an image and watch every layer of the served
models work. Static files from the package, calling only this service's API; a strict
same-origin Content-Security-Policy keeps it that way."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "explorer"
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; "
    "style-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)


def install_explorer(app: FastAPI) -> None:
    app.mount("/static/explorer", StaticFiles(directory=ASSETS), name="explorer-assets")

    @app.get("/", include_in_schema=False)
    async def explorer() -> FileResponse:
        return FileResponse(ASSETS / "index.html", headers={"Content-Security-Policy": POLICY})
