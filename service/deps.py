"""Request dependencies as ``Annotated`` aliases, so routes stay one-liners."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.registry import ModelRegistry
from service.settings import Settings


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _settings(request: Request) -> Settings:
    return request.app.state.settings


RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
