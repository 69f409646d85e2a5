"""The rules every gRPC call obeys, in one interceptor: the REST request gate's, spoken in
gRPC terms.

- an ID: the client's ``x-request-id`` metadata when sane, else a new one, echoed in the
  trailing metadata and carried by every log line written while serving the call;
- who may pass (:class:`service.auth.Access`): the API keys (when set) as
  ``authorization: Bearer <key>`` or ``x-api-key`` metadata, else UNAUTHENTICATED (the health
  service, reflection and ServerLive/ServerReady stay open); repository load/unload need an
  admin key and model control on, else PERMISSION_DENIED;
- errors as status codes: a client's mistake is never UNKNOWN or INTERNAL
  (:data:`STATUS`), an RPC this server does not serve is UNIMPLEMENTED (no traceback logged);
  UNAVAILABLE carries the retry hint (``retry-after`` and ``grpc-retry-pushback-ms``);
- calls in progress, counted from the arrival of their message (a call whose message has
  not come holds nothing), at most ``limit`` (more: RESOURCE_EXHAUSTED); the probes are not
  counted, so no load can fail a readiness check;
- after the call: metrics by method, API and status code, and the access line; after a quiet
  second, freed message memory goes back to the system (``on_call``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service import logs, metrics
from service.apis import api_of, is_probe
from service.auth import Access
from service.errors import ServiceError

log = logging.getLogger("cnn_serve")

# HTTP status of a service error -> its gRPC status code
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
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
    not ours to read). UTF-8, which any text encodes to: a value that is no valid key or ID
    is refused as such, never an encoding error."""
    return [
        (key.encode(), value.encode()) for key, value in metadata or () if isinstance(value, str)
    ]


class RpcGate(grpc.aio.ServerInterceptor):
    """Wraps every unary call of every service; streaming calls (health Watch, reflection)
    are probes and pass as they are."""

    def __init__(
        self, access: Access, limit: int, on_call: Callable[[], None] = lambda: None
    ) -> None:
        self.access, self.limit, self.on_call = access, limit, on_call
        self.active = 0  # calls past their message, not yet answered (probes aside)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.on_call()  # also for calls gRPC refuses before any handler (too large)
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._guard(details.method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guard(self, method: str, behaviour: Callable) -> Callable:
        api, counted = api_of(method), not is_probe(method)

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            headers = _headers(context.invocation_metadata())
            offered = next((v for k, v in headers if k == logs.REQUEST_ID_HEADER_BYTES), None)
            record = logs.RequestRecord(logs.request_id(offered))
            token = logs.CURRENT.set(record)
            trailers: Metadata = (("x-request-id", record.request_id),)
            code = grpc.StatusCode.OK
            self.active += counted
            try:
                refused, record.key = self.access.refusal_of("POST", method, headers)
                if refused is not None:
                    code = STATUS[refused[0]]
                    await context.abort(code, refused[2], trailers)
                if self.active > self.limit:
                    code = grpc.StatusCode.RESOURCE_EXHAUSTED
                    await context.abort(
                        code, f"more than {self.limit} calls in progress; retry later", trailers
                    )
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
                except NotImplementedError:  # the generated servicer's own methods
                    code = grpc.StatusCode.UNIMPLEMENTED
                    await context.abort(code, f"{method} is not served by cnn-serve", trailers)
                except Exception:
                    log.exception("unhandled error in %s", method)
                    code = grpc.StatusCode.INTERNAL
                    await context.abort(code, "internal error; see the server log", trailers)
            finally:
                self.active -= counted
                self.on_call()
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
