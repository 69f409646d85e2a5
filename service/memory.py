"""Reusing freed memory on the hot path; giving it back after a burst of large answers.

A request body of a few megabytes, its pixels and the model's input copy are blocks of
megabytes allocated and freed on every request. glibc serves a block above its mmap threshold
from a fresh mapping, and hands heap memory back whenever more than its trim threshold lies
free at the top: either way each new block is touched page by page. With both at 256 KB a
3 MB OIP body cost ~2,600 page faults (~7 ms of kernel time here). Blocks up to
``MMAP_THRESHOLD`` (a 1,024-image MNIST batch is 3.2 MB) now stay in the heaps for reuse, and
up to ``TRIM_THRESHOLD`` free at the top stays there; larger blocks, such as feature-map
answers, still get mappings of their own, unmapped when freed. Both are fixed (glibc would
raise them after each large free: 16 feature-map requests at once once left a process at
6 GB), and once a burst of feature-map answers is over ``malloc_trim`` hands back what the
heaps hold free (:class:`Trimmer`). Elsewhere than glibc all of it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("cnn_serve")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 4 * 2**20  # blocks above: a mapping of their own
TRIM_THRESHOLD = 64 * 2**20
TRIM_QUIET_S = 1.0

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _mallopt: Callable[..., int] | None = _libc.mallopt
    _malloc_trim: Callable[..., int] | None = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    _mallopt = _malloc_trim = None


def tune_allocator() -> bool:
    """Fix malloc's mmap and trim thresholds (see the module); the app's start calls it."""
    if _mallopt is None:
        return False
    return bool(
        _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def trim() -> None:
    """Free what only reference cycles keep (a request whose error's traceback holds its
    frames, a model's graph), then return the heaps' free memory to the operating system
    (glibc: every arena). The collector's raised thresholds (``app.GC_THRESHOLDS``) and a
    quiet server may otherwise leave those cycles, and their buffers, for a long time."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


class Trimmer:
    """:func:`trim` on a worker thread (it takes milliseconds on a large heap) once no call
    has come for ``quiet_s``: after a burst, when its last answer has been sent and freed,
    not while answers still hold their memory (which would then stay in the heaps); under
    steady load memory is reused, not handed back and faulted in again. Used on the event
    loop."""

    def __init__(self, quiet_s: float = TRIM_QUIET_S) -> None:
        self.quiet_s = quiet_s
        self._last_call = float("-inf")
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_call = loop.time()
        if self._pending is None:
            self._pending = loop.call_later(self.quiet_s, self._due)

    def _due(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_call
        if quiet < self.quiet_s:  # called again meanwhile: wait for the quiet after it
            self._pending = loop.call_later(self.quiet_s - quiet, self._due)
            return
        self._pending = None
        loop.run_in_executor(None, trim)
