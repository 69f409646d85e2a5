"""A decode worker process (:mod:`service.decoding`): its class and its start, in a module
that imports nothing heavy. A spawned worker unpickles its process object and the pool's
initializer - importing their modules - before the initializer runs; while they lived in
:mod:`service.decoding`, Ctrl-C (SIGINT to the whole process group) in the seconds that
importing the preprocessing takes printed a KeyboardInterrupt traceback per worker."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

from training.quiet_tf import TF_FREE_PROCESS


class Process(multiprocessing.context.SpawnProcess):
    """A spawned process named so that :mod:`training.quiet_tf` leaves TensorFlow out of it
    (the name reaches the child before it imports anything of ours)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.name = TF_FREE_PROCESS + self.name


class Context(multiprocessing.context.SpawnContext):
    Process = Process


def start() -> None:
    """Ignore Ctrl-C (the server drains and ends the workers), tune malloc as the server does
    (a decoded image's pixels go back to the OS when freed), and end with the server however
    it ends: a worker blocked on the task queue outlives a server that is killed, or that
    exits before its pool has told the workers to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from service import memory

    memory.tune_allocator()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns once the server process has ended
    os._exit(0)
