"""One settings object, read from ``CNN_SERVE_*`` environment variables and validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"


class BatchPolicy(BaseModel):
    """How a model's runner coalesces concurrent requests into one model call."""

    max_batch_size: int = Field(64, ge=1, le=4096)
    max_delay_ms: float = Field(0.0, ge=0.0, le=1000.0)
    max_queue: int = Field(512, ge=1)


class Settings(BaseSettings):
    """Everything configurable, from the environment (prefix ``CNN_SERVE_``)."""

    model_config = SettingsConfigDict(env_prefix="CNN_SERVE_", env_nested_delimiter="__",
                                      extra="ignore",
                                      protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="processes; each loads every model")
    model_dir: Path = Field(BUNDLED_MODELS, description="TF Serving layout: <name>/<version>/")
    device: Literal["auto", "cpu", "gpu"] = "auto"
    default_model: str = "digit_odd"
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="whole request body")
    max_image_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard")
    max_images_per_request: int = Field(64, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    batching: BatchPolicy = BatchPolicy()
    batching_overrides: dict[str, BatchPolicy] = Field(
        default_factory=dict, description='per model, JSON: {"cifar10": {"max_batch_size": 32}}')
    inference_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; "
                                                        "0 = half the cores")

    @field_validator("model_dir")
    @classmethod
    def _model_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"model directory {value} does not exist")
        return value.resolve()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def batch_policy(self, model: str) -> BatchPolicy:
        return self.batching_overrides.get(model, self.batching)


@lru_cache
def get_settings() -> Settings:
    return Settings()
