"""Reading a model file someone else made costs a child process, not the caller.

A ``.keras`` file is a config that Keras builds layer by layer: 21 KB can declare a
20000x20000 input or a layer of 10^9 weights, and building it allocates them; a SavedModel's
graph is a program. :func:`import_isolated` runs :func:`training.importer.import_model` in a
child (``python -m training.sandbox``; the caller imports neither TensorFlow nor Keras) that
first limits itself - its address space to what
its libraries took plus ``memory_bytes``, its CPU time to ``cpu_seconds``, its life to its
parent's - and is killed after ``timeout_s``. Whatever a hostile file makes it do, the caller
gets a one-line :class:`~training.Refused` and the repository keeps no half-written
version (a killed child's staging directory is removed under the model's lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from training.import_command import Conflict, Options, Refused
from training.repository import VersionConflict, clean_staging, model_lock

REQUEST, RESULT, NOTICES = "request.json", "result.json", "notices.log"
STEP = "step: "  # a line of the child's stdout that tells a step
# one thread for everything: thread stacks are address space, and a model file is no reason
# to use every core of a serving machine
ONE_THREAD = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",  # reading a file needs no accelerator
}


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # address space beyond what TensorFlow and Keras take
    cpu_seconds: int
    timeout_s: float


def import_isolated(
    options: Options, limits: Limits, scratch: Path, say: Callable[[str], None] | None = None
) -> Path:
    """:func:`~training.importer.import_model` in a limited child process; ``scratch`` (the
    caller's, removed by the caller) takes the child's request, temporary files, notices and
    answer; ``say`` hears each step as the child starts it."""
    request = {"options": _encode(options), "limits": limits.__dict__, "ppid": os.getpid()}
    (scratch / REQUEST).write_text(json.dumps(request))
    env = {**os.environ, **ONE_THREAD, "TMPDIR": str(scratch)}
    expired = threading.Event()
    with (scratch / NOTICES).open("w") as notices:
        child = subprocess.Popen(
            [sys.executable, "-m", "training.sandbox", str(scratch)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=notices,
            text=True,
            env=env,
        )

        def expire() -> None:
            expired.set()
            child.kill()

        timer = threading.Timer(limits.timeout_s, expire)
        timer.start()
        try:
            assert child.stdout is not None
            for line in child.stdout:  # until the child ends or is killed
                if line.startswith(STEP) and say is not None:
                    say(line.removeprefix(STEP).rstrip())
            returncode = child.wait()
        finally:
            timer.cancel()
            if child.poll() is None:  # the caller gave up (an exception in say)
                child.kill()
                child.wait()
    if expired.is_set():
        _clean(options)
        raise Refused(
            f"reading the model took longer than {limits.timeout_s:g} s "
            "(CNN_SERVE_IMPORT_TIMEOUT_S)"
        )
    try:
        answer = json.loads((scratch / RESULT).read_text())
    except (OSError, ValueError):
        _clean(options)
        raise Refused(_death(returncode, limits)) from None
    if "path" in answer:
        return Path(answer["path"])
    raise (Conflict if answer.get("conflict") else Refused)(answer["refused"])


def _death(returncode: int, limits: Limits) -> str:
    """Why a child that gave no answer ended, in its owner's terms."""
    if returncode == -signal.SIGXCPU:
        return (
            f"reading the model took more than {limits.cpu_seconds} s of CPU "
            "(CNN_SERVE_IMPORT_CPU_SECONDS)"
        )
    return (
        f"reading the model needed more than the {limits.memory_bytes / 2**20:,.0f} MB an "
        "import may use (CNN_SERVE_IMPORT_MEMORY_BYTES), or crashed the reader"
    )


def _clean(options: Options) -> None:
    """A killed child's staging directory, once its lock is released."""
    root = options.model_dir / options.name
    with contextlib.suppress(VersionConflict, OSError), model_lock(root):
        clean_staging(root)
        if not any(p.name.isdigit() for p in root.iterdir()):
            shutil.rmtree(root, ignore_errors=True)  # a new model that did not come to be


def _encode(options: Options) -> dict:
    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()}
    fields["labels"] = [[head, str(path)] for head, path in (options.labels or {}).items()]
    return fields


def _decode(fields: dict) -> Options:
    fields = dict(fields)
    for name in ("source", "model_dir", "samples"):
        fields[name] = Path(fields[name]) if fields[name] is not None else None
    for name in ("value_range", "input_size"):
        fields[name] = tuple(fields[name]) if fields[name] is not None else None
    fields["labels"] = {head: Path(path) for head, path in fields["labels"]} or None
    return Options(**fields)


def _confine(limits: Limits, ppid: int) -> None:
    """This process's limits, set before the file is read (the libraries are loaded)."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the parent
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != ppid:  # the parent died before that
        os._exit(1)
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    space = pages * os.sysconf("SC_PAGE_SIZE") + limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))


def child(scratch: Path) -> int:
    """``python -m training.sandbox SCRATCH``: the request in SCRATCH, the answer there too;
    each step on stdout as it starts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    request = json.loads((scratch / REQUEST).read_text())
    import keras  # noqa: F401 - the libraries first, then the limits
    import tensorflow as tf

    from training.importer import import_model

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    _confine(Limits(**request["limits"]), request["ppid"])
    try:
        path = import_model(_decode(request["options"]), _say)
        answer: dict = {"path": str(path)}
    except Conflict as exc:
        answer = {"refused": str(exc), "conflict": True}
    except Refused as exc:
        answer = {"refused": str(exc)}
    except MemoryError:
        answer = {"refused": _death(0, Limits(**request["limits"]))}
    except Exception as exc:  # noqa: BLE001 - whatever the file did, said in one line
        answer = {"refused": f"the model could not be imported ({type(exc).__name__})"}
    (scratch / RESULT).write_text(json.dumps(answer))
    return 0


def _say(step: str) -> None:
    print(f"{STEP}{step}", flush=True)


if __name__ == "__main__":
    sys.exit(child(Path(sys.argv[1])))
