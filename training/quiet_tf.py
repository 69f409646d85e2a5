"""TensorFlow, imported with its native start-up notices kept off the terminal.

TensorFlow's C++ libraries write to file descriptor 2 before their logging is set up (absl's
"before absl::InitializeLog()" lines), so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them: oneDNN
notices, "Could not find cuda drivers" and "failed call to cuInit" on a machine without a GPU,
each twice. A newcomer reads "ERROR" and thinks something broke. While TensorFlow is imported
and its GPUs are first listed, descriptor 2 is captured: the known notices are kept in
:data:`NOTICES` (``cnn-serve`` logs them at debug level), every other line is written back as
it was. Whether a GPU that was asked for is missing is reported by the code that asked.

Both packages import this module first (their ``__init__``), so a plain ``import tensorflow``
anywhere after finds it loaded. Where TensorFlow is not installed (Keras on JAX), and in a
process named :data:`TF_FREE_PROCESS` (the decode workers, which must not pay TensorFlow's
seconds and hundreds of MB), it does nothing.
"""

from __future__ import annotations

import multiprocessing
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
# multiprocessing processes named so never import TensorFlow here (the decode workers);
# uvicorn's --workers processes are multiprocessing's too, and do
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


def _load() -> None:
    if multiprocessing.current_process().name.startswith(TF_FREE_PROCESS):
        return  # service.decoding's worker: it never needs TensorFlow
    with native_stderr_captured():
        try:
            import tensorflow
        except ModuleNotFoundError:  # Keras on JAX: nothing to quieten
            return
        tensorflow.config.list_physical_devices("GPU")  # where cuInit reports


_load()
