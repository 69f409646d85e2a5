"""ASGI middleware: upload size limit (refused before buffering) and request metrics."""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import error_body


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(status, code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a body over ``limit`` bytes: at once from Content-Length, else (chunked) as soon
    as the streamed body passes the limit (the app's partial work is discarded)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body exceeds the limit of {self.limit:,} bytes"
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    return await _send_error(send, 400, "bad_request", "invalid Content-Length")
                if too_big:
                    return await _send_error(send, 413, "payload_too_large", message)
                # the server delivers no more than Content-Length bytes: nothing to count
                return await self.app(scope, receive, send)
        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    return {"type": "http.disconnect"}  # stop the parser reading on
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await _send_error(send, 413, "payload_too_large", message)
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _send_error(send, 413, "payload_too_large", message)


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
            path = self._route(scope)
            model = scope.get("path_params", {}).get("name") or scope.get("state", {}).get(
                "model", "")
            metrics.REQUESTS.labels(path, scope["method"], model, str(status)).inc()
            metrics.LATENCY.labels(path, model).observe(time.perf_counter() - start)
