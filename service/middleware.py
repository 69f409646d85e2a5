"""ASGI middleware: request body limits (size and pace); request IDs, metrics and logs."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.apis import api_of
from service.errors import send_error
from service.tensors import header_length

log = logging.getLogger("cnn_serve")
DISCONNECT: Message = {"type": "http.disconnect"}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


CLOSE = ((b"connection", b"close"),)  # the rest of the body is never read


async def _send_error(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    await send_error(scope, send, status, code, message, CLOSE)


def _too_large(limit: int) -> str:
    return f"request body exceeds the limit of {limit:,} bytes"


class BodyGuard:
    """Limits on a request body while the app reads it: its size (413: at once from
    Content-Length, else as soon as a chunked body passes the limit) and its pace (408 after a
    pause of ``idle_s``, or when the whole body takes longer than ``total_s``, counted from
    the app's first read, so time spent waiting for admission does not count).

    On either, the app's read ends as if the client had left, its answer is replaced by the
    error, and the connection is closed (the rest of the body is never read).
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        idle_s: float,
        total_s: float,
        model_uploads: tuple[re.Pattern, int] | None = None,
    ) -> None:
        self.app, self.limit, self.idle_s, self.total_s = app, limit, idle_s, total_s
        self.model_uploads = model_uploads  # (POST path, its larger limit): a model file

    def _limit(self, scope: Scope) -> int:
        if (
            self.model_uploads is not None
            and scope["method"] == "POST"
            and self.model_uploads[0].fullmatch(scope["path"])
        ):
            return self.model_uploads[1]
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counting, limit = True, self._limit(scope)
        for key, value in scope["headers"]:
            if key == b"content-length":
                length = header_length(value)
                if length is None:
                    return await _send_error(
                        scope, send, 400, "bad_request", "invalid Content-Length"
                    )
                if length > limit:
                    return await _send_error(
                        scope, send, 413, "payload_too_large", _too_large(limit)
                    )
                counting = False  # the server delivers no more than Content-Length bytes
        body = _Body(self, receive, counting, limit)
        started = False

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if body.failure is None:
                started = started or msg["type"] == "http.response.start"
                return await send(msg)
            if not started:
                started = True
                await _send_error(scope, send, *body.failure)

        try:
            await self.app(scope, body.receive, guarded_send)
        except Exception:
            if body.failure is None:
                raise
        finally:
            body.stop()
        if body.failure is not None and not started:
            await _send_error(scope, send, *body.failure)


class _Body:
    """One request body's reads, watched by a single timer per request rather than a timeout
    per read (``asyncio.timeout`` on every read cost ~6 % of the hot path under load)."""

    __slots__ = (
        "counting",
        "deadline",
        "done",
        "failure",
        "guard",
        "last_read",
        "limit",
        "raw_receive",
        "seen",
        "task",
        "timer",
        "waiting",
    )

    def __init__(self, guard: BodyGuard, receive: Receive, counting: bool, limit: int) -> None:
        self.guard, self.raw_receive, self.counting, self.limit = guard, receive, counting, limit
        self.failure: tuple[int, str, str] | None = None
        self.seen, self.done, self.waiting = 0, False, False
        self.last_read = self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None

    async def receive(self) -> Message:
        if self.done or self.failure is not None:
            return await self.raw_receive() if self.failure is None else DISCONNECT
        loop = asyncio.get_running_loop()
        self.last_read = loop.time()
        if self.timer is None:  # the first read: arm the watchdog
            self.deadline = self.last_read + self.guard.total_s
            self.task = asyncio.current_task()
            self.timer = loop.call_at(
                min(self.last_read + self.guard.idle_s, self.deadline), self._check
            )
        self.waiting = True
        try:
            msg = await self.raw_receive()
        except asyncio.CancelledError:
            if self.failure is None or self.task is None or not self.task.uncancel() == 0:
                raise
            return DISCONNECT  # the watchdog interrupted a read that took too long
        finally:
            self.waiting = False
        self.last_read = loop.time()
        if msg["type"] == "http.request":
            self.done = not msg.get("more_body", False)
            self.seen += len(msg.get("body", b""))
            if self.counting and self.seen > self.limit:
                self.failure = (413, "payload_too_large", _too_large(self.limit))
                return DISCONNECT  # stop the app reading on
        if self.done:
            self.stop()
        return msg

    def _check(self) -> None:
        """The watchdog: interrupt a read that has waited ``idle_s``, or past the deadline."""
        self.timer = None
        if self.done or self.failure is not None or self.task is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = min(self.last_read + self.guard.idle_s, self.deadline)
        if self.waiting and now >= due:
            self.failure = (408, "request_timeout", "the request body did not arrive in time")
            self.task.cancel()
        else:  # data arrived, or the app is busy with it: look again when it could be due
            self.timer = loop.call_at(max(due, now + 0.01), self._check)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class RequestTelemetry:
    """Per request: an ID (the client's ``X-Request-ID`` or a new one, echoed in the answer
    and on every log line written while serving it), metrics by route template, API and
    status, and one access log line (per-model counts are the runners': a ``/predict``
    request names its model inside the body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        offered = next((v for k, v in scope["headers"] if k == logs.REQUEST_ID_HEADER_BYTES), None)
        record = logs.RequestRecord(logs.request_id(offered))
        token = logs.CURRENT.set(record)
        echoed = (logs.REQUEST_ID_HEADER_BYTES, record.request_id.encode())

        started = False

        async def record_send(msg: Message) -> None:
            nonlocal status, started
            if msg["type"] == "http.response.start":
                status, started = msg["status"], True
                msg["headers"] = [*msg.get("headers", ()), echoed]
                drain = getattr(scope["app"].state, "drain", None)
                if drain is not None and drain.active:  # clients: leave keep-alive connections
                    msg["headers"].append((b"connection", b"close"))
            await send(msg)

        try:
            await self.app(scope, receive, record_send)
        except Exception:
            # a bug, never a client's mistake: logged with its request ID; the client gets
            # the error shape and a connection closed cleanly after it (not a reset)
            log.exception("unhandled error on %s %s", scope["method"], scope["path"][:200])
            if started:
                raise
            await send_error(
                scope,
                record_send,
                500,
                "internal_error",
                "internal error; see the server log",
                CLOSE,
            )
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            protocol = api_of(scope["path"]).label
            method = scope["method"] if scope["method"] in METHODS else metrics.OTHER
            seconds = time.perf_counter() - start
            metrics.REQUESTS.labels(route, method, protocol, str(status)).inc()
            metrics.LATENCY.labels(route, protocol).observe(seconds)
            logs.access(
                record,
                method=method,
                route=route,
                protocol=protocol,
                status=status,
                latency_ms=round(seconds * 1000, 3),
            )
            logs.CURRENT.reset(token)
