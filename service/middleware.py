"""The one ASGI layer every request passes (:class:`RequestGate`): request IDs, API keys,
body limits (size and pace), drain, metrics and the access line, in one pass."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs, metrics
from service.apis import api_of
from service.auth import CHALLENGE, Access
from service.drain import Drain
from service.errors import send_error
from service.tensors import header_length

log = logging.getLogger("cnn_serve")
DISCONNECT: Message = {"type": "http.disconnect"}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


CLOSE = ((b"connection", b"close"),)  # the rest of the body is never read


def _too_large(limit: int) -> str:
    return f"request body exceeds the limit of {limit:,} bytes"


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

    def __init__(self, guard: RequestGate, receive: Receive, counting: bool, limit: int) -> None:
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


class RequestGate:
    """Every HTTP request passes this one layer, in one pass, before and after the app:

    - an ID: the client's ``X-Request-ID`` when sane, else a new one, echoed in the answer
      and carried by every log line written while serving it;
    - who may pass (:class:`service.auth.Access`): API keys, admin keys for the doors that
      change what is served; 401 or 403 in the path's API's error shape;
    - the body's limits: its size (413 at once from ``Content-Length``, else as soon as a
      chunked body passes the limit) and its pace (408 after a pause of ``idle_s`` or when the
      whole body takes longer than ``total_s``, from the app's first read, so time spent
      waiting for admission does not count); on either the app's read ends as if the client
      had left, its answer is replaced by the error and the connection closed;
    - while draining, ``Connection: close`` on every answer;
    - an unexpected exception: a 500 in the error shape, connection closed in order;
    - after the answer: metrics by route template, API and status, and the access line.

    ``direct`` routes (method, path -> route; the hot ``POST /predict``) are called here,
    past the framework's router and per-request machinery, which cost more than the gate
    itself (bench.stages); their errors go through the app's own exception ``handlers``,
    so the answers are the same either way.
    """

    def __init__(
        self,
        app: ASGIApp,
        drain: Drain,
        body_limit: int,
        idle_s: float,
        total_s: float,
        access: Access | None = None,
        model_uploads: tuple[re.Pattern, int] | None = None,
        direct: Mapping[tuple[str, str], Route] | None = None,
        handlers: Mapping[Any, Callable] | None = None,
    ) -> None:
        self.app, self.drain, self.access = app, drain, access
        self.limit, self.idle_s, self.total_s = body_limit, idle_s, total_s
        self.model_uploads = model_uploads  # (POST path, its larger limit): a model file
        self.direct, self.handlers = direct or {}, handlers or {}

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
        start = time.perf_counter()
        offered, length = None, b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == logs.REQUEST_ID_HEADER_BYTES:
                offered = value
        record = logs.RequestRecord(logs.request_id(offered))
        token = logs.CURRENT.set(record)
        exchange = _Exchange(
            scope, send, (logs.REQUEST_ID_HEADER_BYTES, record.request_id.encode()), self.drain
        )
        try:
            refusal = self._refusal(scope, length, record)
            if refusal is not None:
                await exchange.error(*refusal)
            else:
                await self._serve(scope, receive, exchange, length)
        finally:
            self._record(scope, record, exchange.status, time.perf_counter() - start)
            logs.CURRENT.reset(token)

    def _refusal(self, scope: Scope, length: bytes, record: logs.RequestRecord) -> tuple | None:
        """(status, code, message, headers) of an answer the app never sees, or None."""
        if self.access is not None:
            refused, record.key = self.access.refusal(scope)
            if refused is not None:
                return (*refused, (CHALLENGE,) if refused[0] == 401 else ())
        if length:
            size, limit = header_length(length), self._limit(scope)
            if size is None:
                return 400, "bad_request", "invalid Content-Length", CLOSE
            if size > limit:
                return 413, "payload_too_large", _too_large(limit), CLOSE
        return None

    async def _serve(
        self, scope: Scope, receive: Receive, exchange: _Exchange, length: bytes
    ) -> None:
        # the server delivers no more than Content-Length bytes: count only a chunked body
        body = exchange.body = _Body(self, receive, not length, self._limit(scope))
        route = self.direct.get((scope["method"], scope["path"]))
        try:
            if route is None:
                await self.app(scope, body.receive, exchange.send)
            else:
                await self._call(route, scope, body.receive, exchange.send)
        except Exception:
            if body.failure is None:
                # a bug, never a client's mistake: logged with its request ID; the client gets
                # the error shape and a connection closed cleanly after it (not a reset)
                log.exception("unhandled error on %s %s", scope["method"], scope["path"][:200])
                if exchange.started:
                    raise
                await exchange.error(
                    500, "internal_error", "internal error; see the server log", CLOSE
                )
        finally:
            body.stop()
        if body.failure is not None and not exchange.started:
            await exchange.error(*body.failure, CLOSE)

    async def _call(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """A direct route's endpoint on the raw request; a client's mistake is answered by
        the app's handler for it, anything else propagates as from the framework."""
        scope["route"] = route
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable | None:
        """The app's handler for ``exc``'s nearest class below ``Exception`` (whose handler,
        the 500, is the gate's own)."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in self.handlers:
                return self.handlers[cls]
        return None

    @staticmethod
    def _record(scope: Scope, record: logs.RequestRecord, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        protocol = api_of(scope["path"]).label
        method = scope["method"] if scope["method"] in METHODS else metrics.OTHER
        metrics.record_request(route, method, protocol, str(status), seconds)
        logs.access(
            record,
            method=method,
            route=route,
            protocol=protocol,
            status=status,
            latency_ms=round(seconds * 1000, 3),
        )


class _Exchange:
    """The answer's side of one request: its status, the headers the gate adds to it, and a
    body failure, whose error replaces whatever the app would send."""

    __slots__ = ("body", "drain", "echoed", "raw_send", "scope", "started", "status")

    def __init__(self, scope: Scope, send: Send, echoed: tuple[bytes, bytes], drain: Drain) -> None:
        self.scope, self.raw_send, self.echoed, self.drain = scope, send, echoed, drain
        self.status, self.started = 500, False
        self.body: _Body | None = None

    async def send(self, msg: Message) -> None:
        """The app's ``send``."""
        if self.body is not None and self.body.failure is not None:
            if not self.started:
                await self.error(*self.body.failure, CLOSE)
            return
        await self._forward(msg)

    async def error(self, status: int, code: str, message: str, headers: tuple = ()) -> None:
        """An error in the shape of the request's API, sent by the gate itself."""
        await send_error(self.scope, self._forward, status, code, message, headers)

    async def _forward(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self.status, self.started = msg["status"], True
            headers = [*msg.get("headers", ()), self.echoed]
            if self.drain.active:  # clients: leave keep-alive connections
                headers.append((b"connection", b"close"))
            msg["headers"] = headers
        await self.raw_send(msg)
