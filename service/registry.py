"""Finds ``<model_dir>/<name>/<version>/``, keeps what is served in step with it (polling),
loads each version onto the device and owns their runners."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import tensorflow as tf

from service import memory, metrics
from service.batching import Runner
from service.errors import ModelFailed, ModelNotFound, ModelNotReady, VersionNotFound, clip
from service.model import ServedModel, Status
from service.settings import Settings, usable_cores
from training.repository import clean_repository

log = logging.getLogger("cnn_serve")


def configure_threads(threads: int, graph_threads: int) -> None:
    """TensorFlow's intra-op threads: by default one per core. Small batches stay on one
    thread (Eigen's cost model) and leave the event loop its core; a big batch uses every core,
    which half the cores would cap at half the model's speed (bench.protocols --batch 1024).
    Inter-op threads: one in a server, so a batch's PNG decodes (one core's work) leave the
    event loop the other; every core offline, where nothing else waits for one."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads or usable_cores())
        tf.config.threading.set_inter_op_parallelism_threads(graph_threads or usable_cores())
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
        raise RuntimeError(
            "CNN_SERVE_DEVICE=gpu but TensorFlow sees no GPU "
            "(install the 'gpu' extra and run with the NVIDIA runtime)"
        )
    if requested in ("gpu", "auto") and gpus:
        return gpus[0].name
    return "/device:CPU:0"


def discover(model_dir: Path) -> list[tuple[str, int, Path]]:
    """Every ``name/<integer>`` directory, oldest first. What is inside is checked when it
    loads, so an incomplete or unreadable version is reported as failed, not skipped."""
    found = []
    for model_root in sorted(
        p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        try:
            entries = list(model_root.iterdir())
        except OSError as exc:
            log.error("cannot list %s: %s", model_root, exc)
            continue
        found += [
            (model_root.name, int(p.name), p) for p in entries if p.name.isdigit() and p.is_dir()
        ]
    return sorted(found, key=lambda t: (t[0], t[1]))


def fingerprint(path: Path) -> tuple[int, int, float]:
    """(files, bytes, newest mtime) of a version directory: a failed version is retried once
    this changes (e.g. a copy that was still in progress has finished)."""
    files = size = 0
    newest = 0.0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime)
    return files, size, newest


VersionRef = int | str  # a version number, or a label the settings give one
REPOSITORY_STATES = {Status.ready: "READY", Status.loading: "LOADING", Status.failed: "UNAVAILABLE"}
CHANGE_WAIT_S = 30.0  # a load or unload answers once done, or after this while it carries on


async def _settled(change) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(change), CHANGE_WAIT_S)
    except TimeoutError:
        pass


class ModelRegistry:
    """What is served: every version the repository holds and the version policy keeps.

    :meth:`sync` makes it so - at start, every ``model_poll_seconds`` and on request: new
    versions load off the event loop and serve once ready; a version that is gone stops
    taking requests at once, finishes those it has, then unloads; a failed one is reported
    (and retried when its files change) without disturbing the others.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configure_threads(settings.inference_threads, settings.graph_threads)
        self.device = pick_device(settings.device)
        self.models: dict[str, dict[int, ServedModel]] = {}
        self.runners: dict[tuple[str, int], Runner] = {}
        self._fingerprints: dict[tuple[str, int], tuple[int, int, float]] = {}
        self._retiring: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task | None = None
        self.unloaded: set[str] = set()  # models an operator unloaded: not served until loaded

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` (Triton's repository ``unload``); the
        repository keeps its files and a later :meth:`load` serves it again."""
        self.versions(name)  # 404 for a model the service does not have
        self.unloaded.add(name)
        await self.sync_soon()

    async def load(self, name: str) -> None:
        """Serve ``name`` from the repository again (or for the first time), now."""
        self.unloaded.discard(name)
        await self.sync_soon()

    async def load_now(self, name: str) -> None:
        """:meth:`load`, waited for at most ``CHANGE_WAIT_S`` (it carries on after that);
        404 when the repository has no such model (Triton's repository ``load``)."""
        await _settled(self.load(name))
        self.versions(name)

    async def unload_now(self, name: str) -> None:
        await _settled(self.unload(name))

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every version and its state as Triton's repository index lists them: READY,
        LOADING or UNAVAILABLE (failed, or a model an operator unloaded)."""
        entries = [
            {
                "name": name,
                "version": str(version),
                "state": REPOSITORY_STATES[model.status],
                "reason": model.error or "",
            }
            for name in sorted(self.models)
            for version, model in sorted(self.models[name].items())
        ]
        entries += [
            {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
            for name in sorted(self.unloaded)
        ]
        return [e for e in entries if not ready_only or e["state"] == "READY"]

    async def load_all(self) -> None:
        removed = await asyncio.to_thread(clean_repository, self.settings.model_dir)
        if removed:
            log.info("removed what interrupted imports left: %s", ", ".join(removed))
        await self.sync()
        if not self.models:
            log.warning("no models found under %s", self.settings.model_dir)

    async def poll(self, every_s: float) -> None:
        """Sync with the repository every ``every_s`` seconds, for ever."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sync()
            except Exception:
                log.exception("scanning %s failed", self.settings.model_dir)

    def sync_soon(self) -> asyncio.Task:
        """A scan for callers that may give up waiting (reload requests), shared by everyone
        who asks while it runs: a burst of requests costs one scan, not one each."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self.sync())
        return self._pending

    async def sync(self) -> None:
        async with self._lock:
            found = {
                (name, version): path
                for name, version, path in await asyncio.to_thread(  # file I/O: off the loop
                    discover, self.settings.model_dir
                )
            }
            by_model: dict[str, list[int]] = {}
            for name, version in found:
                by_model.setdefault(name, []).append(version)
            wanted = {
                (name, version)
                for name, versions in by_model.items()
                if name not in self.unloaded
                for version in self.settings.versions_to_serve(name, versions)
            }
            served = {
                (name, version) for name, versions in self.models.items() for version in versions
            }
            for name, version in sorted(served - wanted):
                self._retire(name, version)
            for name, version in sorted(wanted):
                model = self.models.get(name, {}).get(version)
                if model is None or (
                    model.status is Status.failed
                    and await asyncio.to_thread(fingerprint, found[name, version])
                    != self._fingerprints.get((name, version))
                ):
                    await self._load(name, version, found[name, version])

    async def _load(self, name: str, version: int, path: Path) -> None:
        model = ServedModel(
            name,
            version,
            path,
            self.device,
            self.settings.lite_runtime,
            self.settings.max_model_memory_bytes,
        )
        self.models.setdefault(name, {})[version] = model  # reported as loading meanwhile
        self._fingerprints[(name, version)] = await asyncio.to_thread(fingerprint, path)
        await asyncio.to_thread(model.load)
        labels = (name, str(version))
        metrics.MODEL_READY.labels(*labels).set(model.status is Status.ready)
        if model.status is Status.ready and model.load_seconds is not None:
            metrics.LOAD_SECONDS.labels(*labels).set(model.load_seconds)
            runner = Runner(
                model,
                self.settings.batch_policy(name),
                self.settings.queue_timeout_s,
                self.settings.heavy_per_version,
            )
            runner.start()
            self.runners[(name, version)] = runner

    def _retire(self, name: str, version: int) -> None:
        """Stop routing to a version now; unload it once its requests are done."""
        del self.models[name][version]
        if not self.models[name]:
            del self.models[name]
        self._fingerprints.pop((name, version), None)
        metrics.MODEL_READY.labels(name, str(version)).set(0)
        runner = self.runners.pop((name, version), None)
        log.info(
            "model %s v%s is no longer served%s",
            name,
            version,
            "; finishing its requests" if runner else "",
        )
        if runner is not None:
            task = asyncio.get_running_loop().create_task(self._unload(runner))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _unload(self, runner: Runner) -> None:
        """Close a retired version's runner once its requests are done, then give its memory
        back: a loaded SavedModel is a web of reference cycles that the collector's rare full
        passes (``GC_THRESHOLDS``) would reach some day, and glibc keeps freed heap pages;
        unloading and loading cifar10_resnet 35 times grew a server from 947 to 1,816 MB."""
        await runner.drain_and_close(self.settings.queue_timeout_s)
        del runner
        await asyncio.to_thread(memory.trim)

    async def close(self) -> None:
        await asyncio.gather(*(runner.close() for runner in self.runners.values()), *self._retiring)
        self.runners.clear()

    @property
    def ready(self) -> bool:
        """Serving what a request that names no model gets: the default model."""
        versions = self.models.get(self.settings.default_model, {})
        return any(self._serving(m) for m in versions.values())

    def _serving(self, model: ServedModel) -> bool:
        """Ready and with its runner: a version is ready (its load thread says so) a moment
        before the loop has made its runner, and a request must not pick it meanwhile."""
        return model.status is Status.ready and (model.name, model.version) in self.runners

    def versions(self, name: str) -> dict[int, ServedModel]:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {clip(name)} (served: {known})")
        return self.models[name]

    def latest_version(self, name: str) -> int:
        """The newest version that is ready, else the newest at all."""
        versions = self.versions(name)
        ready = [v for v, m in versions.items() if self._serving(m)]
        return max(ready or versions)

    def resolve(self, name: str, version: VersionRef | None) -> int:
        """A version number, label or nothing (the newest ready) -> the version number."""
        if version is None:
            return self.latest_version(name)
        if isinstance(version, int) or version.isdigit():
            return int(version)
        labels = self.settings.version_labels.get(name, {})
        if version not in labels:
            raise VersionNotFound(
                f"model {name!r} has no version label {clip(version)} "
                f"(labels: {sorted(labels) or 'none'})"
            )
        return labels[version]

    def get(self, name: str, version: VersionRef | None = None) -> ServedModel:
        versions = self.versions(name)
        number = self.resolve(name, version)
        if number not in versions:
            raise VersionNotFound(
                f"model {name!r} has no version {clip(number)} (versions: {sorted(versions)})"
            )
        return versions[number]

    def runner(self, name: str, version: VersionRef | None = None) -> Runner:
        model = self.get(name, version)
        if model.status is Status.failed:  # retrying will not help: no Retry-After
            raise ModelFailed(f"model {name!r} v{model.version} {model.error}")
        if not self._serving(model):
            raise ModelNotReady(
                f"model {name!r} v{model.version} is still loading",
                headers={"Retry-After": "5"},
            )
        return self.runners[(model.name, model.version)]
