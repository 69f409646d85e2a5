"""``cnn-serve predict`` and ``cnn-serve evaluate``: a folder of images classified, or a
labelled set scored, with the service's own preprocessing and batching.

In-process by default: the app's lifespan builds the same server (models from
``CNN_SERVE_MODEL_DIR``, decoding on every core, the batcher) with no port open, and each
chunk of files goes through :func:`service.inference.predict` as a ``/predict`` request would;
with ``--url`` the chunks are ``/predict`` requests to a running server
(:class:`service.client.Client`). Several chunks are in flight at once, so the batcher
always has the next one while the model computes. A file that is not an image is a row with
an error (and a line on stderr), never the end of the run: a chunk the service refuses is sent
again file by file to find which.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from service.image_files import ImageFile
from training.metadata import ModelMetadata

if TYPE_CHECKING:
    from service.settings import Settings

IN_FLIGHT = 4  # chunks sent at once


@dataclass
class Chunking:
    files: int  # at most this many files per request
    bytes: int  # and about this many bytes


LOCAL = Chunking(1024, 64 * 2**20)  # the batcher's largest batch, within the model's own
REMOTE = Chunking(64, 8 * 2**20)  # within a server's default 10 MB body


@dataclass
class Result:
    file: ImageFile
    outputs: dict[str, dict] | None = None  # per head, as /predict answers
    error: str | None = None
    data: bytes = b""  # while its chunk is in flight


class Engine:
    """Where images are classified: :class:`LocalEngine` or :class:`RemoteEngine`."""

    chunking: Chunking
    metadata: ModelMetadata
    model: str
    version: int

    async def predict(self, files: list[tuple[str, bytes]]) -> list[dict]:
        """Per file, its ``outputs`` (raises the service's error for a refused chunk)."""
        raise NotImplementedError

    async def explain(self, name: str, data: bytes, head: str) -> str | None:
        """Grad-CAM's overlay (PNG, base64) of one image for ``head``'s predicted class, or
        None when the version cannot explain (no Keras model)."""
        raise NotImplementedError

    def refused(self, exc: Exception) -> str | None:
        """The message when ``exc`` is the service refusing what was sent (else None)."""
        raise NotImplementedError

    async def warm_up(self) -> None:
        """Make the first chunk as fast as the rest, before the first file is read."""


class LocalEngine(Engine):
    chunking = LOCAL

    def __init__(self, server: Any, model: str | None, version: str | None, params: dict):
        from service.schemas import PredictParams

        self.server = server
        runner = server.registry.runner(model or server.settings.default_model, version)
        self.metadata, self.model, self.version = (
            runner.model.metadata,
            runner.model.name,
            runner.model.version,
        )
        self.params = PredictParams(model=self.model, version=str(self.version), **params)
        self.chunking = Chunking(min(LOCAL.files, server.max_images(runner.model)), LOCAL.bytes)

    async def warm_up(self) -> None:
        """A chunk's worth of blank PNGs through the batcher, twice: TensorFlow's first two
        calls at a batch this large are slower than the rest (1,024 28x28 PNGs: 91, 46, then
        23 ms; its memory arena grows), ~0.1 s of a 0.35 s run of 10,000, which would skew
        the progress bar's rate and time left."""
        from service.graph_decode import PNG
        from service.model import blank_image

        runner = self.server.registry.runner(self.model, str(self.version))
        pngs = [blank_image(self.metadata.input, PNG)] * self.chunking.files
        for _ in range(2):
            await runner.predict(pngs, None, runner.model.encoded[PNG])

    async def predict(self, files: list[tuple[str, bytes]]) -> list[dict]:
        """As ``/predict`` computes its answer (:func:`service.inference.infer_files`), the
        answers without the per-label probabilities (:func:`service.heads.answers`)."""
        from service import heads, inference
        from service.model_input import of_files
        from service.uploads import Upload

        runner = self.server.registry.runner(self.model, str(self.version))
        uploads = [Upload(name, data) for name, data in files]
        of_files(uploads, self.server.max_images(runner.model))  # as /predict checks them
        outputs, _ = await inference.infer_files(self.server, runner, uploads)
        top_k, threshold = self.params.top_k, self.params.threshold
        return heads.answers(self.metadata, outputs, top_k, threshold, probabilities=False)

    async def explain(self, name: str, data: bytes, head: str) -> str | None:
        from service import inference
        from service.errors import ServiceError
        from service.schemas import ExplainParams
        from service.uploads import Upload

        params = ExplainParams(version=str(self.version), output=head)
        try:
            answer = await inference.explain(self.server, [Upload(name, data)], self.model, params)
        except ServiceError:
            return None
        return answer["overlay"]

    def refused(self, exc: Exception) -> str | None:
        from service.errors import ServiceError

        return str(exc) if isinstance(exc, ServiceError) and exc.status < 500 else None


class RemoteEngine(Engine):
    chunking = REMOTE

    def __init__(self, client: Any, model: str | None, version: str | None, params: dict):
        detail = client.model(model, version) if model else None
        if detail is None:
            listing = client.models()
            detail = client.model(listing["default_model"], version)
        self.client, self.params = client, params
        self.metadata = ModelMetadata.model_validate(detail["metadata"])
        self.model, self.version = self.metadata.name, self.metadata.version

    async def predict(self, files: list[tuple[str, bytes]]) -> list[dict]:
        answer = await asyncio.to_thread(
            self.client.predict, files, self.model, self.version, **self.params
        )
        return [p["outputs"] for p in answer["predictions"]]

    async def explain(self, name: str, data: bytes, head: str) -> str | None:
        import base64

        from service.client import ServiceError

        try:
            answer = await asyncio.to_thread(
                self.client.explain, (name, data), self.model, head, None, None, self.version
            )
        except ServiceError:
            return None
        return base64.b64encode(answer["overlay"]).decode()

    def refused(self, exc: Exception) -> str | None:
        from service.client import ServiceError

        return exc.message if isinstance(exc, ServiceError) and exc.status < 500 else None


def local_settings(overrides: dict | None = None) -> Settings:
    """The settings the commands' server runs on: no port open, quiet, TensorFlow's
    inter-op threads on every core (a batch's PNG decodes side by side)."""
    from service.settings import Settings

    return Settings(
        grpc_port=0,
        drain_seconds=0,  # Ctrl-C stops at once
        model_poll_seconds=0,
        access_log=False,
        log_level="warning",
        graph_threads=0,
        **(overrides or {}),
    )


@contextlib.asynccontextmanager
async def local_server(overrides: dict | None = None) -> AsyncIterator[Any]:
    """The service's server, built by the app's own lifespan from :func:`local_settings`."""
    from service.app import create_app

    app = create_app(local_settings(overrides))
    async with app.router.lifespan_context(app):
        yield app.state.server


def _chunks(files: Iterable[ImageFile], chunking: Chunking) -> Iterator[list[ImageFile]]:
    """Files in chunks of at most ``chunking.files`` and about ``chunking.bytes`` (a file
    larger than that alone)."""
    chunk: list[ImageFile] = []
    size = 0
    for file in files:
        if chunk and (len(chunk) == chunking.files or size + file.size > chunking.bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(file)
        size += file.size
    if chunk:
        yield chunk


@dataclass
class Progress:
    """Images done so far, as a bar on a terminal (rich) or a line every few seconds."""

    total: int | None
    what: str
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _bar: Any = None
    _task: Any = None
    _said: float = 0.0

    def __enter__(self) -> Self:
        import sys

        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )

            self._bar = Bar(
                TextColumn(self.what),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} images/s"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total, rate="-")
        return self

    def advance(self, n: int) -> None:
        self.done += n
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{rate:,.0f}")
        elif time.monotonic() - self._said >= 5:
            self._said = time.monotonic()
            of = f"/{self.total:,}" if self.total else ""
            say(f"{self.what}: {self.done:,}{of} images, {rate:,.0f} images/s")

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    @property
    def rate(self) -> float:
        """Images per second over the run (up to its end once it has ended)."""
        seconds = getattr(self, "seconds", time.monotonic() - self.started)
        return self.done / max(seconds, 1e-9)


def say(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


async def classify(
    engine: Engine,
    files: Iterable[ImageFile],
    progress: Progress | None = None,
) -> AsyncIterator[Result]:
    """Every file's result, in order, with ``IN_FLIGHT`` chunks in flight."""
    pending: list[asyncio.Task] = []
    chunks = _chunks(files, engine.chunking)
    try:
        for chunk in chunks:
            pending.append(asyncio.create_task(_chunk(engine, chunk)))
            if len(pending) >= IN_FLIGHT:
                for result in await pending.pop(0):
                    yield _counted(result, progress)
        while pending:
            for result in await pending.pop(0):
                yield _counted(result, progress)
    finally:
        for task in pending:
            task.cancel()


def _counted(result: Result, progress: Progress | None) -> Result:
    if result.error is not None:  # the service's messages name the file already
        path = result.file.path
        say(result.error if path in result.error else f"{path}: {result.error}")
    if progress is not None:
        progress.advance(1)
    return result


def _read(chunk: list[ImageFile]) -> list[Result]:
    """The chunk's files read (on one thread: a thread hop per file cost more than the read)."""
    results = []
    for file in chunk:
        try:
            results.append(Result(file, data=file.read()))
        except (OSError, ValueError) as exc:
            results.append(Result(file, error=f"cannot read it ({exc})"))
    return results


# files are read on one thread, chunk after chunk: several threads each doing a syscall per
# small file convoy on the GIL (10,000 28x28 PNGs: 14k -> 35k files/s through classify)
_READER = ThreadPoolExecutor(1, thread_name_prefix="read-files")


async def _chunk(engine: Engine, chunk: list[ImageFile]) -> list[Result]:
    results = await asyncio.get_running_loop().run_in_executor(_READER, _read, chunk)
    readable = [r for r in results if r.error is None]
    if not readable:
        return results
    try:
        outputs = await engine.predict([(r.file.path, r.data) for r in readable])
    except Exception as exc:
        message = engine.refused(exc)
        if message is None:
            raise
        if len(readable) == 1:
            readable[0].error = message
            outputs = []
        else:  # one bad file refuses the chunk: each alone, to find which
            for r in readable:
                for alone in await _chunk_of_one(engine, r):
                    r.outputs, r.error = alone.outputs, alone.error
            outputs = []
    for r, out in zip(readable, outputs):
        r.outputs = out
    for r in results:  # a run of 10,000 photos is not held in memory
        r.data = b""
    return results


async def _chunk_of_one(engine: Engine, result: Result) -> list[Result]:
    try:
        (outputs,) = await engine.predict([(result.file.path, result.data)])
    except Exception as exc:
        message = engine.refused(exc)
        if message is None:
            raise
        return [Result(result.file, error=message)]
    return [Result(result.file, outputs=outputs)]
