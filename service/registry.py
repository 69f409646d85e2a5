"""Finds ``<model_dir>/<name>/<version>/``, loads each onto the device, owns their runners."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import tensorflow as tf

from service import metrics
from service.batching import Runner
from service.errors import ModelFailed, ModelNotFound, ModelNotReady, VersionNotFound
from service.model import ServedModel, Status
from service.settings import Settings

log = logging.getLogger("cnn_serve")


def configure_threads(threads: int) -> None:
    """TensorFlow's intra-op threads: by default half the cores (one on a 2-core machine), so
    the event loop keeps a core for HTTP while batching supplies the parallelism."""
    threads = threads or max(1, (os.cpu_count() or 2) // 2)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process (tests): keep it
        pass


def pick_device(requested: str) -> str:
    """``auto`` -> the first GPU TensorFlow sees, else the CPU; ``gpu`` without one is fatal."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:  # several workers share a GPU: take memory as needed, not all of it up front
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier app in this process
            pass
    gpus = tf.config.list_logical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise RuntimeError("CNN_SERVE_DEVICE=gpu but TensorFlow sees no GPU "
                           "(install the 'gpu' extra and run with the NVIDIA runtime)")
    if requested in ("gpu", "auto") and gpus:
        return gpus[0].name
    return "/device:CPU:0"


def discover(model_dir: Path) -> list[tuple[str, int, Path]]:
    """Every ``name/<integer>`` directory, oldest first. What is inside is checked when it
    loads, so an incomplete or unreadable version is reported as failed, not skipped."""
    found = []
    for model_root in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        try:
            entries = list(model_root.iterdir())
        except OSError as exc:
            log.error("cannot list %s: %s", model_root, exc)
            continue
        found += [(model_root.name, int(p.name), p) for p in entries
                  if p.name.isdigit() and p.is_dir()]
    return sorted(found, key=lambda t: (t[0], t[1]))


class ModelRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configure_threads(settings.inference_threads)
        self.device = pick_device(settings.device)
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.runners: dict[tuple[str, int], Runner] = {}

    async def load_all(self) -> None:
        """Load every version off the event loop; failures are logged and reported, not fatal."""
        for name, version, path in discover(self.settings.model_dir):
            model = ServedModel(name, version, path, self.device)
            self.models.setdefault(name, {})[version] = model
            await asyncio.to_thread(model.load)
            labels = (name, str(version))
            metrics.MODEL_READY.labels(*labels).set(model.status is Status.ready)
            if model.status is Status.ready:
                metrics.LOAD_SECONDS.labels(*labels).set(model.load_seconds)
                runner = Runner(model, self.settings.batch_policy(name),
                                self.settings.queue_timeout_s)
                runner.start()
                self.runners[(name, version)] = runner
        if not self.models:
            log.warning("no models found under %s", self.settings.model_dir)

    async def close(self) -> None:
        await asyncio.gather(*(runner.close() for runner in self.runners.values()))
        self.runners.clear()

    @property
    def ready(self) -> bool:
        """Serving what a request that names no model gets: the default model."""
        versions = self.models.get(self.settings.default_model, {})
        return any(m.status is Status.ready for m in versions.values())

    def versions(self, name: str) -> dict[int, ServedModel]:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {name!r} (served: {known})")
        return self.models[name]

    def latest_version(self, name: str) -> int:
        """The newest version that is ready, else the newest at all."""
        versions = self.versions(name)
        ready = [v for v, m in versions.items() if m.status is Status.ready]
        return max(ready or versions)

    def get(self, name: str, version: int | None = None) -> ServedModel:
        versions = self.versions(name)
        version = self.latest_version(name) if version is None else version
        if version not in versions:
            raise VersionNotFound(f"model {name!r} has no version {version} "
                                  f"(versions: {sorted(versions)})")
        return versions[version]

    def runner(self, name: str, version: int | None = None) -> Runner:
        model = self.get(name, version)
        if model.status is Status.failed:  # retrying will not help: no Retry-After
            raise ModelFailed(f"model {name!r} v{model.version} {model.error}")
        if model.status is not Status.ready:
            raise ModelNotReady(f"model {name!r} v{model.version} is {model.status.value}",
                                headers={"Retry-After": "5"})
        return self.runners[(model.name, model.version)]
