"""Admission control: process-wide budgets that a request reserves before it uses them.

One hostile or heavy client must not take the whole process: every upload route first
reserves a request slot and its body's bytes (before the body is read), and decoding reserves
the pixels it will decode. Below a budget a request waits its turn (first come, first
served); a bounded number may wait, each for at most ``timeout_s``; beyond either it gets a
cheap 503 with ``Retry-After`` before any of its body is read or parsed. Waiting costs a
future, not CPU, so goodput under overload stays at the peak rather than collapsing into
retries (bench/overload.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from service import metrics
from service.errors import Overloaded

RETRY_AFTER = {"Retry-After": "1"}


class Budget:
    """A quantity (requests, bytes, pixels) shared by concurrent requests: a weighted FIFO
    semaphore with a bounded number of waiters."""

    def __init__(self, name: str, capacity: int, max_waiting: int) -> None:
        self.name, self.capacity, self.max_waiting = name, capacity, max_waiting
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()
        self._in_use = metrics.BUDGET_IN_USE.labels(name)
        self._refused = metrics.ADMISSION_REFUSED.labels(name)

    async def acquire(self, amount: int) -> None:
        """Take ``amount`` now, or wait behind earlier requests (cancel to give up)."""
        if amount > self.capacity:  # settings validation keeps one request within capacity
            raise ValueError(f"{amount} exceeds the {self.name} budget of {self.capacity}")
        if not self._waiters and self.used + amount <= self.capacity:
            self._take(amount)
            return
        if len(self._waiters) >= self.max_waiting:
            self._refused.inc()
            raise Overloaded(f"the service is at capacity ({self.name}); retry shortly",
                             headers=RETRY_AFTER)
        entry = (amount, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self.release(amount)  # granted just as the wait was given up
            else:
                self._waiters.remove(entry)
                self._wake()  # a large waiter at the head may have held back smaller ones
            raise

    def release(self, amount: int) -> None:
        self.used -= amount
        self._in_use.set(self.used)
        self._wake()

    def _take(self, amount: int) -> None:
        self.used += amount
        self._in_use.set(self.used)

    def _wake(self) -> None:
        while self._waiters:
            amount, future = self._waiters[0]
            if self.used + amount > self.capacity:
                return
            self._waiters.popleft()
            self._take(amount)
            future.set_result(None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class Admission:
    """The budgets of one process, and the one deadline for waiting on them."""

    def __init__(self, *, max_requests: int, max_waiting: int, body_bytes: int,
                 decode_pixels: int, timeout_s: float) -> None:
        self.requests = Budget("requests", max_requests, max_waiting)
        self.body_bytes = Budget("body_bytes", body_bytes, max_waiting)
        self.decode_pixels = Budget("decode_pixels", decode_pixels, max_waiting)
        self.timeout_s = timeout_s

    @asynccontextmanager
    async def reserve(self, **amounts: int) -> AsyncIterator[None]:
        """Hold ``amounts`` of the named budgets (e.g. ``requests=1, body_bytes=n``) for the
        block; waiting for all of them together takes at most ``timeout_s``."""
        async with AsyncExitStack() as held:
            try:
                async with asyncio.timeout(self.timeout_s):
                    for name, amount in amounts.items():
                        budget: Budget = getattr(self, name)
                        await budget.acquire(amount)
                        held.callback(budget.release, amount)
            except TimeoutError:
                getattr(self, name)._refused.inc()
                raise Overloaded(f"waited {self.timeout_s:g} s for capacity ({name}); "
                                 "retry shortly", headers=RETRY_AFTER) from None
            yield
