"""Giving memory back to the operating system after a burst of large answers.

glibc's malloc raises its mmap threshold after each large block it frees (up to 32 MB), so
after a burst of multi-megabyte arrays later ones come from the heap, which only shrinks from
the top: 16 feature-map requests at once left the process at 6 GB. A fixed threshold keeps
large arrays in their own mappings (unmapped when freed), and ``malloc_trim`` hands back
what the heaps have free once a burst is over. Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("cnn_serve")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 256 * 1024
TRIM_EVERY_S = 1.0

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _mallopt: Callable[..., int] | None = _libc.mallopt
    _malloc_trim: Callable[..., int] | None = _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    _mallopt = _malloc_trim = None


def tune_allocator() -> bool:
    """Fix malloc's mmap threshold (no dynamic raise); the process entry point calls it."""
    if _mallopt is None:
        return False
    return bool(
        _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and _mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
    )


def trim() -> None:
    """Return the heaps' free memory to the operating system (glibc: every arena)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class Trimmer:
    """:func:`trim` on a worker thread (it takes milliseconds on a large heap), at most once
    per ``every_s``: a call within that time is put off to its end, so that the last answer
    of a burst is always followed by a trim. Used on the event loop."""

    def __init__(self, every_s: float = TRIM_EVERY_S) -> None:
        self.every_s = every_s
        self._last = float("-inf")
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last + self.every_s - loop.time()
        if wait <= 0:
            self._run()
        elif self._pending is None:
            self._pending = loop.call_later(wait, self._run)

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._pending, self._last = None, loop.time()
        loop.run_in_executor(None, trim)
