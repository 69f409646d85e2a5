"""Where uploads are decoded and normalised: worker processes by default, so photos use every
core.

Preparing a photo for a digit model is ~2.8 ms of Pillow, NumPy and SciPy, much of it Python
that holds the GIL: on threads, two decodes and the event loop took turns on one interpreter,
and a 1200x900 JPEG at c=8 ran no faster than a naive server that decodes the whole photo
(bench.run --photo). A worker process gets the upload's bytes (small next to the pixels they
become) and sends back the model's input; it imports the preprocessing only (spawned, never
forked from a process running TensorFlow's threads; :mod:`training.quiet_tf` leaves
TensorFlow out of a process named so). ``CNN_SERVE_DECODE_PROCESSES=0`` decodes on threads
in the server process instead (``CNN_SERVE_DECODE_THREADS``), as small machines or a
debugger may want.

A worker that dies (killed for memory, a crash in a codec) fails the requests it held with a
503 and the pool is replaced; the next request is served by fresh workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from service import decode_worker, preprocess
from service.errors import Overloaded
from training.metadata import InputSpec

log = logging.getLogger("cnn_serve")


def _ready() -> int:
    """A worker's first task: unpickling it imports this module, and so the preprocessing."""
    return os.getpid()


class Decoder:
    """Prepares uploads for a model on ``processes`` worker processes (0: on ``threads``
    threads). ``threads`` also run the other pixel work of requests (Grad-CAM overlays)."""

    def __init__(self, processes: int, threads: int) -> None:
        self.threads = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = self._new_pool() if processes else None
        self._starting: list[Future] = []

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.processes,
            mp_context=decode_worker.Context(),
            initializer=decode_worker.start,
        )

    def warm(self) -> None:
        """Start every worker now (each takes ~1 s to import its libraries), not on the
        first photo; :meth:`started` waits for them."""
        if self._pool is not None:
            self._starting = [self._pool.submit(_ready) for _ in range(self.processes)]

    async def started(self, timeout_s: float) -> None:
        """Wait until the workers :meth:`warm` started answer (the app's start awaits this
        after the models load, so a ready server decodes at once); log if they do not."""
        waiting = [asyncio.wrap_future(future) for future in self._starting]
        if not waiting:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waiting)
        except Exception as exc:  # noqa: BLE001 - requests will wait for them, or get a 503
            log.warning("decode worker processes not started: %s", exc or type(exc).__name__)

    async def batch(
        self, files: list[tuple[str, bytes]], spec: InputSpec, max_pixels: int
    ) -> np.ndarray:
        """(name, bytes) of each upload -> the model's input batch [n, H, W, C]."""
        pool: Executor = self._pool or self.threads
        try:
            return await asyncio.get_running_loop().run_in_executor(
                pool, preprocess.prepare_all, files, spec, max_pixels
            )
        except BrokenProcessPool:
            self._replace(pool)
            raise Overloaded("an image decoding process stopped; retry shortly") from None

    def _replace(self, broken: Executor) -> None:
        if self._pool is broken:  # the first request to see it replaces it
            log.error("a decode worker process died; starting new ones")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            self.warm()

    async def close(self, timeout_s: float) -> None:
        """Stop the threads, and the workers once their decodes are done (``timeout_s`` at
        most: past it they end with the server), so that they leave nothing behind."""
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self._pool is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        except TimeoutError:
            log.warning(
                "decode worker processes still busy after %g s; they end with it", timeout_s
            )
