"""Logs: one JSON object per line (or plain text), every line of a request carrying its ID.

The request being served is a context variable, set by the request middleware and filled in
by the code that learns more (the runner: model, version, batch size), so a log line written
anywhere while serving a request names it, and the request's own line says what it did.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import re
import select
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import orjson

from training import quiet_tf

ACCESS = logging.getLogger("cnn_serve.access")
REQUEST_ID_HEADER_BYTES = b"x-request-id"
VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # printable, bounded: safe to log and echo


@dataclass(slots=True)
class RequestRecord:
    """What one request's log line reports beyond route and status."""

    request_id: str
    model: str | None = None
    version: int | None = None
    batch_size: int | None = None
    key: str | None = None  # the kind of key that was offered and valid: admin or inference


CURRENT: ContextVar[RequestRecord | None] = ContextVar("cnn_serve_request", default=None)


def request_id(offered: bytes | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new one."""
    if offered:
        text = offered.decode("latin-1")
        if VALID_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex


def note(**fields: object) -> None:
    """Record facts about the current request (no-op outside a request)."""
    record = CURRENT.get()
    if record is not None:
        for key, value in fields.items():
            setattr(record, key, value)


_make_record = logging.getLogRecordFactory()


def _record_with_request(*args: object, **kwargs: object) -> logging.LogRecord:
    """Every log record made while a request is served carries its ID."""
    record = _make_record(*args, **kwargs)
    current = CURRENT.get()
    record.request_id = current.request_id if current is not None else None
    return record


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", ...fields}`` per line (orjson;
    the time's second is formatted once per second)."""

    _second, _prefix = -1, ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC).isoformat()  # ...T21:26:15+00:00
            self._second, self._prefix = second, stamp[:-6]
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request_id", None)
        if request:
            line["request_id"] = request
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _Handler(logging.StreamHandler):
    """The handler :func:`configure` installs (and replaces on the next call)."""


class AccessWriter(logging.Handler):
    """The access lines, one per request: formatted like every other line, but collected and
    written in blocks rather than a write and flush each (a system call per request on the
    event loop). A block is written before it would pass ``select.PIPE_BUF`` bytes, so it is
    one atomic write of whole lines: the workers of ``--workers N`` share one pipe, and a
    larger write could interleave with another's mid-line. Also written 0.25 s after the last
    write, and by :func:`flush_access` (a lifespan task every second, shutdown, exit)."""

    MAX_BYTES, MAX_DELAY_S = select.PIPE_BUF, 0.25

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.lines: list[str] = []
        self.size, self.written = 0, time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        size = len(line.encode()) + 1
        if self.size + size > self.MAX_BYTES:
            self.flush()
        self.lines.append(line)
        self.size += size
        if time.monotonic() - self.written >= self.MAX_DELAY_S:
            self.flush()

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self.lines:
                self.lines.append("")
                self.stream.write("\n".join(self.lines))
                self.stream.flush()
                self.lines.clear()
            self.size, self.written = 0, time.monotonic()


def configure(level: str, fmt: str) -> None:
    """Root logging: JSON lines (``fmt="json"``) or text, each with the request's ID. Replaces
    the handler an earlier call installed, and no other."""
    logging.setLogRecordFactory(_record_with_request)
    # the logging HOWTO's optimisations: no thread or process lookups per record (the access
    # line is written for every request, and skips the caller lookup: see access())
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for logger in (root, ACCESS):
        for old in [h for h in logger.handlers if isinstance(h, _Handler | AccessWriter)]:
            with contextlib.suppress(ValueError, OSError):  # its stream may be closed already
                old.flush()
            logger.removeHandler(old)
    formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    )
    handler, writer = _Handler(), AccessWriter(sys.stderr)
    handler.addFilter(lambda record: record.name != ACCESS.name)  # the writer's
    for one in (handler, writer):
        one.setFormatter(formatter)
    root.addHandler(handler)
    ACCESS.addHandler(writer)
    root.setLevel(level.upper())
    _quieten_libraries(debug=level.lower() == "debug")


# uvicorn's start-up chatter; its "Uvicorn running on <address>" line stays
UVICORN_CHATTER = frozenset(
    {
        "Started server process [%d]",
        "Waiting for application startup.",
        "Application startup complete.",
    }
)


def _quieten_libraries(debug: bool) -> None:
    """A normal start prints one line per model and the listening address. TensorFlow's
    logger loses the handler of its own it installs when imported first (each line came out
    twice, plain and in our format) and its INFO lines; TensorFlow's native start-up notices
    (:mod:`training.quiet_tf`) and uvicorn's chatter are logged at debug level only."""
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.handlers.clear()
    tf_logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    uvicorn_logger = logging.getLogger("uvicorn.error")
    uvicorn_logger.filters = [f for f in uvicorn_logger.filters if f is not _startup_chatter]
    if not debug:
        uvicorn_logger.addFilter(_startup_chatter)
    for line in quiet_tf.NOTICES:
        logging.getLogger("tensorflow.native").debug("%s", line)
    quiet_tf.NOTICES.clear()


def _startup_chatter(record: logging.LogRecord) -> bool:
    return record.msg not in UVICORN_CHATTER


def access(record: RequestRecord, **fields: object) -> None:
    """The request's own line: its ID, what it asked and what it got."""
    if ACCESS.isEnabledFor(logging.INFO):
        for name in ("model", "version", "batch_size", "key"):
            value = getattr(record, name)
            if value is not None:
                fields[name] = value
        # made directly: Logger.info would walk the stack for a caller nobody reads
        ACCESS.handle(
            ACCESS.makeRecord(
                ACCESS.name,
                logging.INFO,
                __file__,
                0,
                "request",
                (),
                None,
                extra={"fields": fields},
            )
        )


def flush_access() -> None:
    """Write the access lines still collected (at shutdown; nothing is lost at exit)."""
    for handler in ACCESS.handlers:
        handler.flush()


async def flush_access_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        flush_access()


atexit.register(flush_access)
