"""One settings object, read from ``CNN_SERVE_*`` environment variables and validated at start."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from training.sandbox import Limits

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max ..."


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may use, for the "one per core" defaults: its CPU affinity,
    within a cgroup CPU limit (``docker run --cpus``, a pod's limit), which ``os.cpu_count()``
    does not see: a pod limited to 2 CPUs on a 64-core node must not start 64 decode
    processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 limit to read
        pass
    return cores or 1


class BatchPolicy(BaseModel):
    """How a model's runner coalesces concurrent requests into one model call."""

    max_batch_size: int = Field(64, ge=1, le=4096)
    max_delay_ms: float = Field(0.0, ge=0.0, le=1000.0)
    max_queue: int = Field(512, ge=1)


class LatestVersions(BaseModel):
    num_versions: int = Field(1, ge=1)


class SpecificVersions(BaseModel):
    versions: list[int] = Field(min_length=1)


class VersionPolicy(BaseModel):
    """Which versions of a model to serve, as TF Serving's ``model_version_policy``:
    ``{"latest": {"num_versions": N}}``, ``{"specific": {"versions": [...]}}`` or
    ``{"all": {}}`` (the default)."""

    model_config = ConfigDict(extra="forbid")

    latest: LatestVersions | None = None
    specific: SpecificVersions | None = None
    all: dict | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        if sum(kind is not None for kind in (self.latest, self.specific, self.all)) > 1:
            raise ValueError("a version policy is one of latest, specific or all")
        return self

    def select(self, versions: list[int]) -> set[int]:
        if self.latest is not None:
            return set(sorted(versions)[-self.latest.num_versions :])
        if self.specific is not None:
            return set(versions) & set(self.specific.versions)
        return set(versions)


LABEL = r"^[a-z][a-z0-9_-]{0,63}$"


class Settings(BaseSettings):
    """Everything configurable, from the environment (prefix ``CNN_SERVE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="CNN_SERVE_", env_nested_delimiter="__", extra="ignore", protected_namespaces=()
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="gRPC (KServe V2 / Triton, TF Serving); 0 = off"
    )
    grpc_max_message_bytes: int = Field(
        40 * 2**20,
        ge=4096,
        description="a gRPC request or answer (more: RESOURCE_EXHAUSTED); 64 images of "
        "224x224x3 FP32 are 38.5 MB",
    )
    grpc_max_concurrent_rpcs: int = Field(
        32,
        ge=1,
        description="gRPC calls whose message has arrived, in progress at once (more: "
        "RESOURCE_EXHAUSTED; health checks are not counted); times the message size, the "
        "memory received messages may hold before admission sees them",
    )
    workers: int = Field(1, ge=1, description="processes; each loads every model")
    model_dir: Path = Field(BUNDLED_MODELS, description="TF Serving layout: <name>/<version>/")
    device: Literal["auto", "cpu", "gpu"] = "auto"
    default_model: str = "digit_odd"
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="whole request body")
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="one image's width x height (decompression bombs)"
    )
    max_request_pixels: int = Field(
        48_000_000,
        gt=0,
        description="pixels decoded for one "
        "request, all images (JPEGs count at their decode scale)",
    )
    max_images_per_request: int = Field(
        1024,
        ge=1,
        le=1024,
        description="images in one request, unless the model's metadata says fewer "
        "(max_batch_size); bytes and pixels are bounded by their own limits and budgets",
    )
    # process-wide budgets (admission control): reserved before use, waited for when short
    max_concurrent_requests: int = Field(
        256, ge=1, description="upload requests being read, decoded or computed at once"
    )
    max_waiting_requests: int = Field(
        4096, ge=0, description="requests waiting for a budget (more get 503 at once)"
    )
    body_bytes_budget: int = Field(
        64 * 1024 * 1024, gt=0, description="request body bytes held at once"
    )
    decode_pixels_budget: int = Field(64_000_000, gt=0, description="pixels being decoded at once")
    # explain and feature maps: one thread does them all, within these bounds
    heavy_per_version: int = Field(
        2,
        ge=1,
        description="explain and feature-map requests "
        "per model version computing or waiting (more: 503)",
    )
    max_heavy_waiting: int = Field(
        8,
        ge=0,
        description="explain and feature-map requests "
        "waiting for the heavy-work thread (more: 503)",
    )
    max_feature_map_bytes: int = Field(
        128 * 2**20,
        gt=0,
        description="memory one "
        "feature-map answer may take (estimated before it is "
        "computed; more: 413)",
    )
    feature_map_bytes_budget: int = Field(
        384 * 2**20, gt=0, description="memory of all feature-map answers being computed or sent"
    )
    gradcam_cache_entries: int = Field(
        64, ge=1, description="traced Grad-CAM graphs kept (one per version, layer and head)"
    )
    gradcam_cache_bytes: int = Field(192 * 2**20, gt=0, description="their estimated memory")
    queue_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="longest wait for a budget or in a model's batch queue (then 503)",
    )
    # slow or broken clients
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="request line + headers (431)")
    header_timeout_s: float = Field(
        10.0, gt=0, description="for the request line and headers to arrive (408)"
    )
    body_idle_timeout_s: float = Field(
        5.0, gt=0, description="longest pause while a body arrives (408)"
    )
    body_timeout_s: float = Field(30.0, gt=0, description="for a whole body to arrive (408)")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="idle keep-alive connection")
    drain_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="on SIGTERM: readiness 503 and still serving this long, then finish and exit",
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="after the drain: longest wait for requests in flight"
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        [],
        description="comma-separated, or @/path/to/file with one key per line: then every "
        "route but /health/* needs 'Authorization: Bearer <key>' or X-API-Key",
    )
    public_paths: Annotated[list[str], NoDecode] = Field(
        [],
        description="comma-separated paths open without a key, e.g. "
        "/docs,/redoc,/openapi.json,/static/docs,/metrics",
    )
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one object per line, for log collectors"
    )
    access_log: bool = Field(
        True,
        description="one log line per request (ID, route, model, "
        "version, status, latency, batch size)",
    )
    batching: BatchPolicy = BatchPolicy()
    batching_overrides: dict[str, BatchPolicy] = Field(
        default_factory=dict, description='per model, JSON: {"cifar10": {"max_batch_size": 32}}'
    )
    model_poll_seconds: float = Field(
        5.0,
        ge=0,
        description="how often the model directory "
        "is read for new or removed versions; 0 = only at start",
    )
    version_policy: dict[str, VersionPolicy] = Field(
        default_factory=dict,
        description='per model, JSON: {"digit_odd": {"latest": '
        '{"num_versions": 2}}}; default: every version',
    )
    version_labels: dict[str, dict[Annotated[str, StringConstraints(pattern=LABEL)], int]] = Field(
        default_factory=dict,
        description='per model, JSON: {"digit_odd": {"stable": 1, '
        '"canary": 2}}; requests may name a label as version',
    )
    model_uploads: bool = Field(
        False,
        description="POST /models/{name}/versions takes a model file (.keras/.h5) and "
        "serves it; needs an admin key (CNN_SERVE_ADMIN_KEYS)",
    )
    model_control: Literal["none", "explicit"] = Field(
        "none",
        description="explicit: admins may load, unload and reload models (Triton's "
        "repository API, POST /models/{name}/reload); none: refused (403), the "
        "repository is still polled",
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        [],
        description="comma-separated, or @/path/to/file: the keys that may upload, load, "
        "unload and reload models (inference keys never may); needed when uploads or model "
        "control are on",
    )
    max_versions_per_model: int = Field(
        10, ge=1, description="versions one model may hold in the repository (uploads: 409)"
    )
    max_repository_bytes: int = Field(
        4 * 2**30, gt=0, description="the model repository's size that uploads may not pass"
    )
    max_model_memory_bytes: int = Field(
        512 * 2**20,
        gt=0,
        description="a model's estimated memory (weights + the largest activations for one "
        "image): larger ones are refused at import and not loaded",
    )
    import_memory_bytes: int = Field(
        2 * 2**30,
        ge=256 * 2**20,
        description="memory (address space, beyond its libraries') of the process that "
        "reads an uploaded or imported model file: a sandbox, so that a hostile file costs "
        "it, not the server",
    )
    import_cpu_seconds: int = Field(120, ge=1, description="that process's CPU time")
    import_timeout_s: float = Field(180.0, gt=0, description="that process's wall-clock time")
    max_model_bytes: int = Field(
        256 * 2**20,
        gt=0,
        description="an uploaded model's request body, and what a .keras archive may unpack to",
    )
    lite_runtime: bool = Field(
        True,
        description="one-image calls through a LiteRT copy of the serving signature "
        "(model.tflite, or converted at load), ~10x faster than TensorFlow's call; batches, "
        "feature maps and Grad-CAM stay on TensorFlow",
    )
    inference_threads: int = Field(
        0, ge=0, description="TensorFlow intra-op threads; 0 = one per core"
    )
    graph_threads: int = Field(
        1,
        ge=0,
        description="TensorFlow inter-op threads, which run a call's independent ops side by "
        "side (a batch's PNG decodes); 1 leaves the event loop a core, 0 = one per core "
        "(what cnn-serve predict and evaluate use)",
    )
    decode_processes: int = Field(
        -1,
        ge=-1,
        description="worker processes that decode and normalise uploads; -1 = one per core, "
        "0 = threads in the server process instead",
    )
    decode_threads: int = Field(
        0,
        ge=0,
        description="threads for pixel work (and decoding when decode_processes is 0); "
        "0 = one per core",
    )

    @field_validator("model_dir")
    @classmethod
    def _model_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"model directory {value} does not exist")
        return value.resolve()

    @field_validator("cors_origins", "public_paths", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _read_keys(cls, value: object) -> object:
        """``k1,k2`` or ``@file`` (one key per line, ``#`` comments). Errors never quote a
        key."""
        if not isinstance(value, str):
            return value
        if value.startswith("@"):
            try:
                lines = Path(value[1:]).read_text().splitlines()
            except OSError as exc:
                raise ValueError(
                    f"cannot read the API key file {value[1:]}: {exc.strerror}"
                ) from None
            keys = [
                line.strip() for line in lines if line.strip() and not line.strip().startswith("#")
            ]
        else:
            keys = [key.strip() for key in value.split(",") if key.strip()]
        if any(len(key) < 16 or any(c.isspace() for c in key) for key in keys):
            raise ValueError("every API key must be at least 16 characters, without spaces")
        return keys

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _admins_for_model_management(self) -> Settings:
        """Doors that change what is served open only for an admin key."""
        if (self.model_uploads or self.model_control == "explicit") and not self.admin_keys:
            raise ValueError(
                "CNN_SERVE_MODEL_UPLOADS=true or CNN_SERVE_MODEL_CONTROL=explicit needs "
                "CNN_SERVE_ADMIN_KEYS (at least one key of 16 or more characters)"
            )
        return self

    @model_validator(mode="after")
    def _one_request_fits(self) -> Settings:
        """A request within the per-request limits must always fit the process budgets."""
        for budget, limit in (
            ("body_bytes_budget", "max_upload_bytes"),
            ("body_bytes_budget", "grpc_max_message_bytes"),
            ("decode_pixels_budget", "max_request_pixels"),
            ("feature_map_bytes_budget", "max_feature_map_bytes"),
        ):
            if getattr(self, budget) < getattr(self, limit):
                raise ValueError(
                    f"{budget} ({getattr(self, budget)}) must be at least "
                    f"{limit} ({getattr(self, limit)})"
                )
        return self

    def batch_policy(self, model: str) -> BatchPolicy:
        return self.batching_overrides.get(model, self.batching)

    def import_limits(self) -> Limits:
        """The confined process that reads a model file (uploads, ``cnn-serve import``)."""
        from training.sandbox import Limits

        return Limits(self.import_memory_bytes, self.import_cpu_seconds, self.import_timeout_s)

    def model_bounds(self) -> dict[str, int]:
        """What a model file may declare (:class:`training.import_command.Options`' ``max_*``)."""
        return {
            "max_unpacked_bytes": self.max_model_bytes,
            "max_memory_bytes": self.max_model_memory_bytes,
        }

    def versions_to_serve(self, model: str, versions: list[int]) -> set[int]:
        return self.version_policy.get(model, VersionPolicy()).select(versions)


@lru_cache
def get_settings() -> Settings:
    return Settings()
