"""Graceful drain: on SIGTERM (or SIGINT) stop looking ready at once, keep serving for
``drain_seconds`` so load balancers notice, then let uvicorn finish every request it has and
exit. A second signal exits without waiting.

Installed from the app's lifespan over the handlers uvicorn put in place, so it works the same
with one worker or several (each worker process drains itself), and under plain ``uvicorn``.
While draining, every answer says ``Connection: close``: clients leave their keep-alive
connections, so none is idle when the listener closes (an idle one closed then is a reset for
a client that sends on it at that moment).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger("cnn_serve")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False

    def install(self) -> None:
        """Wrap the current SIGTERM/SIGINT handlers (uvicorn's). Only the main thread can:
        elsewhere (an app under a test client) this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            then = signal.getsignal(sig)
            if callable(then):
                signal.signal(sig, self._handler(loop, then))

    def _handler(self, loop: asyncio.AbstractEventLoop, then: Callable) -> Callable:
        def handle(sig: int, frame: object) -> None:
            if self.active or self.seconds <= 0:  # a second signal, or no drain: exit now
                then(sig, frame)
                return
            self.active = True
            log.info(
                "%s: draining for %g s (readiness 503), then finishing every request",
                signal.Signals(sig).name,
                self.seconds,
            )
            loop.call_soon_threadsafe(loop.call_later, self.seconds, then, sig, frame)

        return handle
