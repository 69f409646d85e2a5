"""The rules every gRPC call obeys, in one interceptor: the REST request gate's, spoken in
gRPC terms.

- an ID: the client's ``x-request-id`` metadata when sane, else a new one, echoed in the
  trailing metadata and carried by every log line written while serving the call;
- the API keys (when set): ``authorization: Bearer <key>`` or ``x-api-key`` metadata, else
  UNAUTHENTICATED; the health service, reflection and ServerLive/ServerReady stay open;
- errors as status codes: a client's mistake is never UNKNOWN or INTERNAL
  (:data:`STATUS`); UNAVAILABLE carries the retry hint (``retry-after`` and
  ``grpc-retry-pushback-ms``);
- after the call: metrics by method, API and status code, and the access line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service import logs, metrics
from service.apis import api_of
from service.auth import ApiKeys
from service.errors import ServiceError

log = logging.getLogger("cnn_serve")

# HTTP status of a service error -> its gRPC status code
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
}
Metadata = tuple[tuple[str, str], ...]


def status_of(exc: ServiceError) -> grpc.StatusCode:
    return STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def retry_hint(exc: ServiceError) -> Metadata:
    """``Retry-After`` of a 503 as trailing metadata: as sent over HTTP, and as gRPC's retry
    pushback in milliseconds, which gRPC clients with a retry policy honour."""
    after = (exc.headers or {}).get("Retry-After")
    if after is None or not after.isdigit():
        return ()
    return (("retry-after", after), ("grpc-retry-pushback-ms", str(int(after) * 1000)))


def _headers(metadata: Any) -> list[tuple[bytes, bytes]]:
    """Invocation metadata as HTTP-style headers (text values only; binary ``-bin`` keys are
    not ours to read)."""
    return [
        (key.encode("latin-1"), value.encode("latin-1"))
        for key, value in metadata or ()
        if isinstance(value, str)
    ]


class RpcGate(grpc.aio.ServerInterceptor):
    """Wraps every unary call of every service; streaming calls (health Watch, reflection)
    are probes and pass as they are."""

    def __init__(self, keys: ApiKeys | None) -> None:
        self.keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._guard(details.method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guard(self, method: str, behaviour: Callable) -> Callable:
        api = api_of(method)

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            headers = _headers(context.invocation_metadata())
            offered = next((v for k, v in headers if k == logs.REQUEST_ID_HEADER_BYTES), None)
            record = logs.RequestRecord(logs.request_id(offered))
            token = logs.CURRENT.set(record)
            trailers: Metadata = (("x-request-id", record.request_id),)
            code = grpc.StatusCode.OK
            try:
                refused = self.keys.refusal_of(method, headers) if self.keys else None
                if refused is not None:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await context.abort(code, refused[2], trailers)
                context.set_trailing_metadata(trailers)
                try:
                    return await behaviour(request, context)
                except ServiceError as exc:
                    code = status_of(exc)
                    await context.abort(code, exc.message, trailers + retry_hint(exc))
                except asyncio.CancelledError:  # the client left or its deadline passed
                    code = grpc.StatusCode.CANCELLED
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception:
                    log.exception("unhandled error in %s", method)
                    code = grpc.StatusCode.INTERNAL
                    await context.abort(code, "internal error; see the server log", trailers)
            finally:
                seconds = time.perf_counter() - start
                metrics.record_request(method, "POST", api.label, code.name, seconds)
                logs.access(
                    record,
                    method="POST",
                    route=method,
                    protocol=api.label,
                    status=code.name,
                    latency_ms=round(seconds * 1000, 3),
                )
                logs.CURRENT.reset(token)

        return guarded
