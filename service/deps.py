"""Request dependencies as ``Annotated`` aliases, so routes stay one-liners."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core import Core
from service.registry import ModelRegistry
from service.settings import Settings


# async on purpose: FastAPI runs plain ``def`` dependencies on a worker thread per request
async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _core(request: Request) -> Core:
    return request.app.state.core


CoreDep = Annotated[Core, Depends(_core)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
