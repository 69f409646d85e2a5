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

from service import metrics
from service.errors import Overloaded


class Budget:
    """A quantity (requests, bytes, pixels) shared by concurrent requests: a weighted FIFO
    semaphore with a bounded number of waiters."""

    def __init__(self, name: str, capacity: int, max_waiting: int) -> None:
        self.name, self.capacity, self.max_waiting = name, capacity, max_waiting
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()
        self.refused = metrics.ADMISSION_REFUSED.labels(name)

    def try_acquire(self, amount: int) -> bool:
        """Take ``amount`` if it is free and nobody waits (the fast path: no future)."""
        if self._waiters or self.used + amount > self.capacity:
            return False
        self.used += amount
        return True

    async def acquire(self, amount: int, deadline: float) -> None:
        """Take ``amount`` now, or wait behind earlier requests until the loop time
        ``deadline`` (then 503). One timer per waiter: ``asyncio.timeout`` per request cost a
        tenth of the event loop under overload (py-spy)."""
        if amount > self.capacity:  # settings validation keeps one request within capacity
            raise ValueError(f"{amount} exceeds the {self.name} budget of {self.capacity}")
        if self.try_acquire(amount):
            return
        if len(self._waiters) >= self.max_waiting:
            self.refused.inc()
            raise Overloaded(f"the service is at capacity ({self.name}); retry shortly")
        loop = asyncio.get_running_loop()
        entry = (amount, loop.create_future())
        self._waiters.append(entry)
        timer = loop.call_at(deadline, self._expire, entry)
        try:
            await entry[1]
        except asyncio.CancelledError:  # the client went away while waiting
            if entry[1].done() and not entry[1].cancelled():
                self.release(amount)  # granted just as the wait was given up
            else:
                self._give_up(entry)
            raise
        finally:
            timer.cancel()

    def _expire(self, entry: tuple[int, asyncio.Future]) -> None:
        if not entry[1].done():
            self.refused.inc()
            entry[1].set_exception(
                Overloaded(f"waited too long for capacity ({self.name}); retry shortly")
            )
            self._give_up(entry)

    def _give_up(self, entry: tuple[int, asyncio.Future]) -> None:
        entry[1].cancel()  # _wake skips it if it still meets it
        if entry in self._waiters:
            self._waiters.remove(entry)
        self._wake()  # a large waiter at the head may have held back smaller ones

    def release(self, amount: int) -> None:
        self.used -= amount
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            amount, future = self._waiters[0]
            if future.done():  # given up (cancelled), its task not yet resumed
                self._waiters.popleft()
                continue
            if self.used + amount > self.capacity:
                return
            self._waiters.popleft()
            self.used += amount
            future.set_result(None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)


class Admission:
    """The budgets of one process, and the one deadline for waiting on them."""

    def __init__(
        self,
        *,
        max_requests: int,
        max_waiting: int,
        body_bytes: int,
        decode_pixels: int,
        timeout_s: float,
        heavy_waiting: int,
        feature_map_bytes: int,
    ) -> None:
        self.requests = Budget("requests", max_requests, max_waiting)
        self.body_bytes = Budget("body_bytes", body_bytes, max_waiting)
        self.decode_pixels = Budget("decode_pixels", decode_pixels, max_waiting)
        # the heavy-work thread (Grad-CAM, feature maps): one job at a time, a few waiting
        self.heavy = Budget("heavy", 1, heavy_waiting)
        self.feature_map_bytes = Budget("feature_map_bytes", feature_map_bytes, max_waiting)
        # model uploads: bodies arriving (each up to CNN_SERVE_MAX_MODEL_BYTES on disk), and
        # the import process, one at a time with a few received uploads waiting their turn
        self.model_upload_bodies = Budget("model_upload_bodies", 2, 0)
        self.model_imports = Budget("model_imports", 1, 4)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings) -> Admission:
        return cls(
            max_requests=settings.max_concurrent_requests,
            max_waiting=settings.max_waiting_requests,
            body_bytes=settings.body_bytes_budget,
            decode_pixels=settings.decode_pixels_budget,
            timeout_s=settings.queue_timeout_s,
            heavy_waiting=settings.max_heavy_waiting,
            feature_map_bytes=settings.feature_map_bytes_budget,
        )

    def reserve(self, **amounts: int) -> Reservation:
        """Hold ``amounts`` of the named budgets (e.g. ``requests=1, body_bytes=n``) for an
        ``async with`` block; waiting for all of them together takes at most ``timeout_s``
        (then 503 with ``Retry-After``)."""
        return self.hold([(getattr(self, name), n) for name, n in amounts.items()])

    def hold(self, amounts: list[tuple[Budget, int]]) -> Reservation:
        """Like :meth:`reserve` for budgets of any owner (e.g. a model version's), in order."""
        return Reservation(self, amounts)


class Reservation:
    """An async context manager (a class, not a generator: it runs on every request)."""

    __slots__ = ("admission", "amounts", "held")

    def __init__(self, admission: Admission, amounts: list[tuple[Budget, int]]) -> None:
        self.admission, self.amounts, self.held = admission, amounts, 0

    async def acquire(self) -> Reservation:
        """Like ``async with``, for a reservation that outlives a block: the caller calls
        :meth:`release`."""
        await self.__aenter__()
        return self

    async def __aenter__(self) -> None:
        for budget, amount in self.amounts:  # the fast path: everything free at once
            if not budget.try_acquire(amount):
                break
            self.held += 1
        else:
            return
        deadline = asyncio.get_running_loop().time() + self.admission.timeout_s
        try:
            for budget, amount in self.amounts[self.held :]:
                await budget.acquire(amount, deadline)
                self.held += 1
        except BaseException:
            self.release()
            raise

    async def __aexit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Give everything back (at most once); on the event loop's thread."""
        for budget, amount in self.amounts[: self.held]:
            budget.release(amount)
        self.held = 0
