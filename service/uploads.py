"""Uploaded images: the ``multipart/form-data`` body of ``/predict`` parsed in one pass, and
the checks every upload passes (declared type, count) before anything decodes it.

``/predict`` parses its in-memory body with the `multipart` library's push parser: ~9 µs for
a one-image form, against ~70 µs through Starlette's form machinery, which spools each file
into a temporary file (measured; the form was the largest single cost of a request).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import multipart
from starlette.datastructures import UploadFile

from service.errors import BadRequest, InvalidParameter, UnsupportedMediaType

ACCEPTED_TYPES = ("image/", "application/octet-stream")
MAX_PARTS = 1024  # images are limited by settings; this bounds the parser's work on junk


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
    """Split a ``multipart/form-data`` body into uploads and fields (400 when malformed).

    Any other body type yields an empty form: the caller reports what is missing.
    """
    mime, options = multipart.parse_options_header(content_type or "")
    form = Form()
    if mime != "multipart/form-data":
        return form
    try:
        with multipart.PushMultipartParser(options.get("boundary", ""),
                                           max_segment_count=MAX_PARTS) as parser:
            for segment, data in _segments(parser, body):
                if segment.name == file_field:
                    form.files.append(Upload(segment.filename, data,
                                             segment.content_type or ACCEPTED_TYPES[1]))
                elif segment.filename is None:
                    form.fields.setdefault(segment.name, data.decode(segment.charset or "utf-8"))
    except (multipart.MultipartError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed multipart/form-data body: {exc}") from None
    return form


def _segments(parser: multipart.PushMultipartParser, body: bytes):
    """(segment, its bytes) for each part; the body is already in memory."""
    segment, chunks = None, []
    for event in parser.parse(body):
        if isinstance(event, multipart.MultipartSegment):
            segment, chunks = event, []
        elif event is None:
            yield segment, b"".join(chunks)
        else:
            chunks.append(event)


def check(uploads: list[Upload], max_images: int) -> list[Upload]:
    """Refuse too many images, and parts whose declared type is not an image."""
    if len(uploads) > max_images:
        raise InvalidParameter(f"{len(uploads)} images in one request; the limit is "
                               f"{max_images}")
    for upload in uploads:
        declared = upload.content_type.split(";")[0].strip()
        if not declared.startswith(ACCEPTED_TYPES):
            raise UnsupportedMediaType(
                f"{upload.filename or 'file'}: {declared} is not an image type; send PNG, "
                "JPEG, GIF, BMP, WebP or TIFF")
    return uploads


async def read(files: list[UploadFile]) -> list[Upload]:
    """Starlette's spooled uploads (FastAPI ``File()`` parameters) as in-memory uploads."""
    return [Upload(f.filename, await f.read(), f.content_type or ACCEPTED_TYPES[1])
            for f in files]
