"""ASGI middleware: request body limits (size and pace) and request metrics."""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import error_body

DISCONNECT: Message = {"type": "http.disconnect"}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(status, code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """Limits on a request body while the app reads it: its size (413: at once from
    Content-Length, else as soon as a chunked body passes the limit) and its pace (408 after a
    pause of ``idle_s``, or when the whole body takes longer than ``total_s``, counted from
    the app's first read, so time spent waiting for admission does not count).

    On either, the app's read ends as if the client had left, its answer is replaced by the
    error, and the connection is closed (the rest of the body is never read).
    """

    def __init__(self, app: ASGIApp, limit: int, idle_s: float, total_s: float) -> None:
        self.app, self.limit, self.idle_s, self.total_s = app, limit, idle_s, total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counting = True
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit():
                    return await _send_error(send, 400, "bad_request", "invalid Content-Length")
                if int(value) > self.limit:
                    return await _send_error(send, 413, "payload_too_large", self._too_large)
                counting = False  # the server delivers no more than Content-Length bytes
        failure: tuple[int, str, str] | None = None
        seen, done, deadline, started = 0, False, 0.0, False

        async def guarded_receive() -> Message:
            nonlocal failure, seen, done, deadline
            if done:
                return await receive()
            now = time.monotonic()
            deadline = deadline or now + self.total_s
            try:
                async with asyncio.timeout(min(self.idle_s, deadline - now)):
                    msg = await receive()
            except TimeoutError:
                failure = (408, "request_timeout", "the request body did not arrive in time")
                return DISCONNECT
            if msg["type"] == "http.request":
                done = not msg.get("more_body", False)
                seen += len(msg.get("body", b""))
                if counting and seen > self.limit:
                    failure = (413, "payload_too_large", self._too_large)
                    return DISCONNECT  # stop the app reading on
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if failure is None:
                started = started or msg["type"] == "http.response.start"
                return await send(msg)
            if not started:
                started = True
                await _send_error(send, *failure)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if failure is None:
                raise
        if failure is not None and not started:
            await _send_error(send, *failure)

    @property
    def _too_large(self) -> str:
        return f"request body exceeds the limit of {self.limit:,} bytes"


class RequestMetrics:
    """Counts and times every request by route template, model and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[object, str] | None = None

    def _route(self, scope: Scope) -> str:
        """The matched route's template: FastAPI puts its routes in the scope; plain Starlette
        routes (the hot path) are found by their endpoint."""
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return route.path
        if self._templates is None:
            self._templates = {r.endpoint: r.path for r in scope["app"].routes
                               if hasattr(r, "endpoint") and hasattr(r, "path")}
        return self._templates.get(scope.get("endpoint"), "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def record(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, record)
        finally:
            path, model = self._route(scope), _model(scope)
            method = scope["method"] if scope["method"] in METHODS else metrics.OTHER
            metrics.REQUESTS.labels(path, method, model, str(status)).inc()
            metrics.LATENCY.labels(path, model).observe(time.perf_counter() - start)


def _model(scope: Scope) -> str:
    """The model a request named, when it is one the service has (else ``other``)."""
    name = scope.get("path_params", {}).get("name") or scope.get("state", {}).get("model")
    if not name:
        return ""
    registry = getattr(scope["app"].state, "registry", None)
    return name if registry is not None and name in registry.models else metrics.OTHER
