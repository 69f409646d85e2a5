"""uvicorn's httptools protocol with limits on the request head, which no ASGI middleware can
see: its size (431) and the time it may take to arrive (408).

Without them a slowloris client holds a connection forever by sending a header line now and
then, and a 64 MB header is parsed and answered (httptools sets no limit). The limits are
checked per connection on bytes uvicorn already handles: a counter on each read and one timer
per request head, nothing per header. ``cnn-serve`` runs uvicorn with this class; the body's
limits are :class:`service.middleware.RequestGate`'s.

It subclasses uvicorn's ``httptools_impl.HttpToolsProtocol``, which is not a public API:
pyproject pins uvicorn to one minor release, and ``tests/service/test_http_guard.py`` (431,
408, lingering close, against the real process) fails if the class changes under it.
The limits come from the app's lifespan state (:func:`lifespan_state`), not a global.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import error_body
from service.settings import Settings

LINGER_S = 2.0  # after refusing a request head, how long the client's rest is drained
HEAD_LIMITS = "cnn_serve.head_limits"  # in the lifespan state: (max bytes, timeout in s)
DEFAULT_LIMITS = (
    Settings.model_fields["max_header_bytes"].default,
    Settings.model_fields["header_timeout_s"].default,
)


def lifespan_state(settings: Settings) -> dict[str, object]:
    """What the app's lifespan hands the server (ASGI lifespan state) for this protocol."""
    return {HEAD_LIMITS: (settings.max_header_bytes, settings.header_timeout_s)}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """A request head (request line and headers) must arrive within ``header_timeout_s`` of
    the connection opening or of the request's first byte, and be at most
    ``max_header_bytes`` (counted from the reads that carry it)."""

    def __init__(self, config, server_state, app_state: dict, *args, **kwargs) -> None:
        super().__init__(config, server_state, app_state, *args, **kwargs)
        self.max_head_bytes, self.head_timeout_s = app_state.get(HEAD_LIMITS, DEFAULT_LIMITS)
        self._in_head, self._head_bytes, self._refused = True, 0, False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_head_timer()  # a client that connects and says nothing is timed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: what the client still sends is dropped
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(
                    431,
                    "request_header_too_large",
                    f"request line and headers exceed {self.max_head_bytes:,} bytes",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "request_timeout", "the request headers did not arrive in time")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the service's error shape and close: the head was never complete, so no
        ASGI request exists to answer it.

        The close lingers: the write side shuts first and what the client still sends is read
        and dropped for a moment, since closing with unread data makes the kernel send a
        reset, which can destroy the answer before the client reads it.
        """
        self._stop_head_timer()
        self._refused = True
        body = json.dumps(error_body(status, code, message)).encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
