"""Uploaded images: the one way every upload route admits a request, reads its
``multipart/form-data`` body, parses it and validates its parameters. What the images must
be is :mod:`service.model_input`'s to say.

The in-memory body is parsed with the `multipart` library's push parser rather than through
Starlette's form machinery, which spools each file into a temporary file and was the largest
single cost of a request (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import multipart
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.admission import Reservation
from service.errors import BadRequest
from service.server import Server
from service.tensors import header_length

Params = TypeVar("Params", bound=BaseModel)

ACCEPTED_TYPES = ("image/", "application/octet-stream")
# the most images a request may send (settings: at most 1,024) and the form's few fields;
# this bounds the parser's work on junk
MAX_PARTS = 1024 + 16


@dataclass
class Upload:
    filename: str | None
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass
class Form:
    """A parsed form: file parts of the ``file`` field, the other fields as text."""

    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def parse_form(body: bytes, content_type: str | None, file_field: str = "file") -> Form:
    """Split a ``multipart/form-data`` body into uploads (the ``file`` parts, with or without
    a filename) and the other fields as text (400 when malformed).

    Any other body type yields an empty form: the caller reports what is missing.
    """
    mime, options = multipart.parse_options_header(content_type or "")
    form = Form()
    if mime != "multipart/form-data":
        return form
    try:
        with multipart.PushMultipartParser(
            options.get("boundary", ""), max_segment_count=MAX_PARTS
        ) as parser:
            for segment, data in _segments(parser, body):
                if segment.name == file_field:
                    form.files.append(
                        Upload(segment.filename, data, segment.content_type or ACCEPTED_TYPES[1])
                    )
                else:  # text, UTF-8 whatever it declares; unknown names are refused later
                    form.fields.setdefault(segment.name, data.decode())
    except (multipart.MultipartError, UnicodeDecodeError):
        raise BadRequest("malformed multipart/form-data body") from None
    return form


def _segments(parser: multipart.PushMultipartParser, body: bytes):
    """(segment, its bytes) for each part; the body is already in memory."""
    segment, chunks = None, list[bytes]()
    for event in parser.parse(body):
        if isinstance(event, multipart.MultipartSegment):
            segment, chunks = event, []
        elif event is None:
            yield segment, b"".join(chunks)
        else:
            chunks.append(event)


def admit(request: Request, server: Server) -> Reservation:
    """What a request with a body reserves before a byte of it is read: a request slot and
    the body's bytes (``Content-Length``, else the limit). A request the process cannot take
    now waits for nothing but a future, or gets a cheap 503."""
    limit = server.settings.max_upload_bytes
    length = header_length(request.headers.get("content-length"))
    nbytes = limit if length is None else min(length, limit)
    return server.admission.reserve(requests=1, body_bytes=max(nbytes, 1))


@asynccontextmanager
async def received(request: Request, server: Server) -> AsyncIterator[Form]:
    """Admit an upload request, then read and parse its body; the request slot and the body's
    bytes stay reserved until the block ends."""
    async with admit(request, server):
        yield parse_form(await request.body(), request.headers.get("content-type"))


def params(form: Form, model: type[Params], request: Request) -> Params:
    """An upload form's parameters validated by ``model`` (which forbids unknown fields):
    422 without an image, with any query parameter, or for an unknown or invalid field.
    Empty fields count as not sent (HTML forms and Swagger UI send them)."""
    if request.scope["query_string"]:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "type": "extra_forbidden",
                    "msg": "unknown query parameter: send parameters as multipart form fields",
                }
                for name in request.query_params or ("?",)
            ]
        )
    if not form.files:
        raise RequestValidationError(
            [
                {
                    "loc": ("file",),
                    "type": "missing",
                    "msg": "Field required: one or more images sent as multipart/form-data",
                }
            ]
        )
    try:
        return model.model_validate({k: v for k, v in form.fields.items() if v})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
