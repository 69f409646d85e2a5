"""One error hierarchy and one JSON error shape: ``{"error": {"status", "code", "message"}}``.

Every failure a client can cause maps to a 4xx with a stable ``code``; nothing a request sends
may surface as a 500.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send

from service.apis import api_of

log = logging.getLogger("cnn_serve")


ECHO_CHARS = 64  # of a client's input quoted back in an error message


def shorten(text: str) -> str:
    """A client's text for an error message, cut to a short prefix: a 60 KB model name must
    not come back as a 60 KB error."""
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}... ({len(text):,} chars)"


def clip(value: object) -> str:
    """``repr`` of a client's input, shortened."""
    return shorten(repr(value))


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or self.headers


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class InvalidImage(BadRequest):
    code = "invalid_image"


class EmptyImage(BadRequest):
    code = "empty_image"


class InvalidModel(BadRequest):
    """An uploaded model file that cannot be served (corrupt, unsupported, unsafe)."""

    code = "invalid_model"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class LayerNotFound(NotFound):
    code = "layer_not_found"


class SampleNotFound(NotFound):
    code = "sample_not_found"


class ExplanationUnavailable(NotFound):
    code = "explanation_unavailable"


class FeatureMapsUnavailable(NotFound):
    code = "feature_maps_unavailable"


class VersionExists(ServiceError):
    """The repository cannot take the version now (it exists, the model is at its cap, or
    another import is writing the model)."""

    status, code = 409, "conflict"


class InsufficientStorage(ServiceError):
    status, code = 507, "insufficient_storage"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class DecompressionBomb(PayloadTooLarge):
    code = "image_too_many_pixels"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidParameter(ServiceError):
    status, code = 422, "invalid_parameter"


class ModelNotReady(ServiceError):
    status, code = 503, "model_not_ready"


class ModelFailed(ServiceError):
    """The version failed to load: retrying will not help until an operator acts."""

    status, code = 503, "model_failed"


class Overloaded(ServiceError):
    """At capacity for now: the client may retry in a second."""

    status, code = 503, "overloaded"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class ClientGone(ServiceError):
    """The client disconnected before its images were computed; nobody reads the answer."""

    status, code = 499, "client_closed_request"


def error_body(status: int, code: str, message: str) -> dict:
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
}


def shaped_error(path: str, status: int, code: str, message: str) -> tuple[int, dict]:
    """The status and body of an error in the shape of the API that ``path`` belongs to."""
    if api_of(path).plain_errors:  # TF Serving's and the OIP's: neither has a 422
        return (400 if status == 422 else status), {"error": message}
    return status, error_body(status, code, message)


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """The same error answered from ASGI middleware, before or instead of the app."""
    status, payload = shaped_error(scope["path"], status, code, message)
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    status, body = shaped_error(request.url.path, status, code, message)
    return JSONResponse(body, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Map every exception a request can raise onto the error shape of its API."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        )
        return _error(request, 422, "invalid_parameter", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return _error(request, exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, __: ClientDisconnect) -> JSONResponse:
        # the client left mid-request: nothing went wrong here and nobody reads the answer
        return error_response(ClientGone.status, ClientGone.code, "client disconnected")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path[:200])
        return error_response(
            500, "internal_error", "internal error; see the server log", {"Connection": "close"}
        )
