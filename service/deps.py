"""Request dependencies as ``Annotated`` aliases, so routes stay one-liners. Everything comes
from the one :class:`~service.server.Server` the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.registry import ModelRegistry
from service.server import Server
from service.settings import Settings


# async on purpose: FastAPI runs plain ``def`` dependencies on a worker thread per request
async def _server(request: Request) -> Server:
    return request.app.state.server


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.server.registry


async def _settings(request: Request) -> Settings:
    return request.app.state.server.settings


ServerDep = Annotated[Server, Depends(_server)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
