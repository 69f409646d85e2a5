"""The model repository as several writers share it: the CLI, a server's uploads, a crashed
import's leftovers.

Each model directory has one writer at a time (an exclusive ``flock`` on
``<model_dir>/.locks/<name>``, released by the kernel however its holder ends; kept outside
``<name>/`` so that it holds versions only, TF Serving's layout); a version is written into a
hidden staging directory (``<name>/.<version>-*``) and renamed into place; an import's
scratch files live in ``<model_dir>/.imports/<random>/``, locked by their owner. What a writer that died left behind
is what nobody holds a lock on, and :func:`clean_repository` removes it at a server's start.
Directories whose names start with a dot are never models.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"  # in a scratch directory
LOCKS = ".locks"  # one file per model
SCRATCH = ".imports"
STAGING = re.compile(r"\.\d+-[^/]*")  # a version being written: ``.<version>-<random>``


class VersionConflict(Exception):
    """The version cannot be written now: it exists, the model holds as many versions as it
    may, or another writer (the CLI, an upload) is writing the model."""


@contextlib.contextmanager
def locked(lock: Path, busy: str) -> Iterator[None]:
    """Hold the file ``lock`` exclusively, or :class:`VersionConflict` (``busy``) at once."""
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VersionConflict(busy) from None
        yield


def model_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """One writer per model directory ``root``, across processes: a second writer is refused
    at once rather than queued behind an import that may take minutes."""
    locks = root.parent / LOCKS
    locks.mkdir(exist_ok=True)
    return locked(
        locks / root.name,
        f"model {root.name!r} is being written by another import; try again when it is done",
    )


def clean_staging(root: Path) -> list[str]:
    """Remove what a writer that died left in ``root`` (its staging directories); the
    caller holds the model's lock, so no writer is alive. The names removed."""
    left = [p for p in root.iterdir() if STAGING.fullmatch(p.name)]
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in left]


@contextlib.contextmanager
def scratch(model_dir: Path) -> Iterator[Path]:
    """A private directory for one import's files (an upload's copy, the reading process's
    temporary files), inside the repository so that a crash leaves nothing elsewhere."""
    base = model_dir / SCRATCH
    base.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=base))
    try:
        with locked(directory / LOCK_FILE, "scratch directory in use"):
            yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last one out leaves no trace
            base.rmdir()


def clean_repository(model_dir: Path) -> list[str]:
    """Remove the staging and scratch directories that writers which died left behind (the
    ones nobody holds a lock on); what was removed, relative to ``model_dir``."""
    removed = []
    for root in (p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(STAGING.fullmatch(p.name) for p in root.iterdir()):
            continue  # the usual case: nothing to lock (nor a lock file to leave)
        with contextlib.suppress(VersionConflict, OSError), model_lock(root):
            removed += [f"{root.name}/{name}" for name in clean_staging(root)]
    imports = model_dir / SCRATCH
    for directory in imports.iterdir() if imports.is_dir() else ():
        try:
            with locked(directory / LOCK_FILE, "in use"):
                shutil.rmtree(directory, ignore_errors=True)
            removed.append(f"{SCRATCH}/{directory.name}")
        except (VersionConflict, OSError):
            continue
    return removed
