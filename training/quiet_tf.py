"""TensorFlow, imported with its native start-up notices kept off the terminal.

TensorFlow's C++ libraries write to file descriptor 2 before their logging is set up (absl's
"before absl::InitializeLog()" lines), so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them: oneDNN
notices, "Could not find cuda drivers" and "failed call to cuInit" on a machine without a GPU,
each twice. A newcomer reads "ERROR" and thinks something broke. While TensorFlow is imported
and its GPUs are first listed, descriptor 2 is captured: the known notices are kept in
:data:`NOTICES` (``cnn-serve`` logs them at debug level), every other line is written back as
it was. Whether a GPU that was asked for is missing is reported by the code that asked.

Both packages import this module first (their ``__init__``); it imports nothing heavy, but
installs an import hook so that whichever module first imports TensorFlow (or Keras, which
imports it) gets it quietly. A process that never needs it - ``cnn-serve --help``, the decode
workers (named :data:`TF_FREE_PROCESS`), the parent of a model import - never pays its
seconds and hundreds of MB. Where TensorFlow is not installed (Keras on JAX), nothing happens.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the C++ lines logged after start-up

NOTICE = re.compile(
    r"(I\d{4} |WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[EW]\d{4} .*(cuInit|cuda drivers|Unable to register cu)"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate)"
)
NOTICES: list[str] = []
# the decode workers' process names: nothing they import needs TensorFlow (tested)
TF_FREE_PROCESS = "tf-free-"


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Descriptor 2 into a file for the block; then notices kept, the rest written back."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if NOTICE.match(line):
                    NOTICES.append(line)
                elif line.strip():
                    print(line, file=sys.stderr)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` for its first importer, whoever that is, and has it imported with
    descriptor 2 captured (its GPUs listed too, where cuInit reports). Installed when either
    package is imported, it imports nothing itself: a process that never uses TensorFlow
    (``cnn-serve --help``, a decode worker, the parent of an import) does not pay its seconds
    and hundreds of MB."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders find it
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_stderr_captured():
            self.loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # where cuInit reports


if "tensorflow" not in sys.modules and not any(
    isinstance(finder, _QuietImport) for finder in sys.meta_path
):
    sys.meta_path.insert(0, _QuietImport())
