"""Logs: one JSON object per line (or plain text), every line of a request carrying its ID.

The request being served is a context variable, set by the request middleware and filled in
by the code that learns more (the runner: model, version, batch size), so a log line written
anywhere while serving a request names it, and the request's own line says what it did.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from training import quiet_tf

REQUEST_ID_HEADER_BYTES = b"x-request-id"
VALID_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # printable, bounded: safe to log and echo


@dataclass(slots=True)
class RequestRecord:
    """What one request's log line reports beyond route and status."""

    request_id: str
    model: str | None = None
    version: int | None = None
    batch_size: int | None = None


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
    """``{"time", "level", "logger", "message", "request_id", ...fields}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
        return json.dumps(line, default=str)


class _Handler(logging.StreamHandler):
    """The handler :func:`configure` installs (and replaces on the next call)."""


def configure(level: str, fmt: str) -> None:
    """Root logging: JSON lines (``fmt="json"``) or text, each with the request's ID. Replaces
    the handler an earlier call installed, and no other."""
    logging.setLogRecordFactory(_record_with_request)
    # the logging HOWTO's optimisations: no thread or process lookups per record (the access
    # line is written for every request, and skips the caller lookup: see access())
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler()
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    )
    root.addHandler(handler)
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


ACCESS = logging.getLogger("cnn_serve.access")


def access(record: RequestRecord, **fields: object) -> None:
    """The request's own line: its ID, what it asked and what it got."""
    if ACCESS.isEnabledFor(logging.INFO):
        for name in ("model", "version", "batch_size"):
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
