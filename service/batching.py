"""Per-model runner: the one place model calls go through, with dynamic batching.

Concurrent requests for one model version are queued and coalesced into a single model call
on the runner's dedicated inference thread; each request's images come back on its own future.
Batches form naturally while the thread is busy (no waiting when idle, so a lone client pays
no delay); ``max_delay_ms`` optionally waits a little longer to fill a batch. A full batch
already waiting when a call starts is handed to the thread at once, to start the moment the
call ends: waking the event loop and then the thread between two calls costs ~2 ms on a busy
2-core host (8 % of a 1,024-image call). A bounded queue answers 503 + Retry-After at once
when full, and requests whose client has gone are skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from service import logs, metrics
from service.admission import Budget
from service.errors import ClientGone, ModelNotReady, Overloaded
from service.model import BatchCall, GraphDecodeFailed, Outputs, ServedModel, pixel_call
from service.settings import BatchPolicy
from service.statistics import Execution, VersionStatistics

log = logging.getLogger("cnn_serve")

IsGone = Callable[[], Awaitable[bool]]
GONE_CHECK_AFTER_S = 0.05  # asking whether a client left costs; only ask those who waited


@dataclass
class _Item:
    call: BatchCall
    images: Any  # whatever its call takes: pixels [n, H, W, C], PNGs, ...
    future: asyncio.Future
    is_gone: IsGone | None = None
    batch: int = 0  # images in the model call that computed it
    size: int = field(init=False)
    queued_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.size = len(self.images)


class _Queue(asyncio.Queue):
    """The batch queue, whose head can be read without taking it (as LifoQueue and
    PriorityQueue reach their storage)."""

    def head(self, n: int) -> list[_Item]:
        return list(itertools.islice(self._queue, n))  # type: ignore[attr-defined]


class Runner:
    def __init__(
        self, model: ServedModel, policy: BatchPolicy, timeout_s: float, heavy_limit: int
    ) -> None:
        self.model, self.policy, self.timeout_s = model, policy, timeout_s
        # explain and feature-map requests of this version, computing or waiting; never more
        self.heavy = Budget("heavy_per_version", heavy_limit, 0)
        self.pixels = pixel_call(model)
        self._queue = _Queue(maxsize=policy.max_queue)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{model.name}")
        self._carry: _Item | None = None
        # batches handed to the inference thread, oldest first: computing, and at most one
        # more waiting behind it
        self._ahead: list[tuple[list[_Item], asyncio.Future[tuple[Outputs, float]], Execution]] = []
        self._task: asyncio.Task | None = None
        self._busy = self._closed = False
        labels = (model.name, str(model.version))
        self._depth = metrics.QUEUE_DEPTH.labels(*labels)
        self._batch_size = metrics.BATCH_SIZE.labels(*labels)
        self._inference = metrics.INFERENCE.labels(*labels)
        self._rejected = metrics.REJECTED.labels(*labels)
        self._skipped = metrics.SKIPPED.labels(*labels)
        self._requests = metrics.MODEL_REQUESTS.labels(*labels)
        self.statistics = VersionStatistics()  # Triton's statistics extension

    def start(self) -> None:
        name = f"batcher-{self.model.name}-{self.model.version}"
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=name)

    async def drain_and_close(self, timeout_s: float, quiet_s: float = 0.5) -> None:
        """For a version that is no longer served: once nothing has been queued or computed
        for ``quiet_s`` (requests that chose this version before it was retired may still be
        decoding), or after ``timeout_s``, close."""
        loop = asyncio.get_running_loop()
        deadline, quiet_since = loop.time() + timeout_s, None
        while loop.time() < deadline:
            if self._queue.empty() and self._carry is None and not self._busy:
                quiet_since = quiet_since or loop.time()
                if loop.time() - quiet_since >= quiet_s:
                    break
            else:
                quiet_since = None
            await asyncio.sleep(0.05)
        await self.close()
        log.info("model %s v%s unloaded", self.model.name, self.model.version)

    async def close(self) -> None:
        """Stop batching; requests still queued get a 503 rather than waiting forever."""
        self._closed = True
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        pending = [self._carry] if self._carry else []
        pending += [item for items, _, _ in self._ahead for item in items]
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(ModelNotReady("the service is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def predict(
        self, images: Any, is_gone: IsGone | None = None, call: BatchCall | None = None
    ) -> Outputs:
        """Queue ``images`` for ``call`` (default: pixels [n, H, W, C] through the model's
        serving signature) and wait for their outputs (each [n, ...])."""
        if self._closed:
            raise ModelNotReady(
                f"model {self.model.name} v{self.model.version} is no longer served",
                headers={"Retry-After": "1"},
            )
        item = _Item(
            call or self.pixels, images, asyncio.get_running_loop().create_future(), is_gone
        )
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._rejected.inc()
            self.statistics.failed()
            raise Overloaded(
                f"model {self.model.name} v{self.model.version} has "
                f"{self.policy.max_queue} requests queued; retry shortly"
            ) from None
        self._requests.inc()
        outputs = await item.future  # the depth gauge is set once per batch, by _loop
        logs.note(model=self.model.name, version=self.model.version, batch_size=item.batch)
        return outputs

    async def _next_batch(self) -> list[_Item]:
        first = self._carry or await self._queue.get()
        self._carry = None
        self._busy = True  # requests in hand: not drained, whatever the queue says
        items, total = [first], first.size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.max_delay_ms / 1000
        while total < self.policy.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if total + item.size > self.policy.max_batch_size:
                self._carry = item  # never split a request; it opens the next batch
                break
            items.append(item)
            total += item.size
        return items

    async def _live(self, items: list[_Item]) -> list[_Item]:
        """Drop requests already answered; those that waited past the deadline (503: under
        overload, serving the freshest requests keeps goodput up); and those that waited a
        while and whose client has disconnected since (nobody would read their result)."""
        live = []
        now = time.monotonic()
        waited_since, expired = now - GONE_CHECK_AFTER_S, now - self.timeout_s
        for item in items:
            if item.future.done():
                continue
            if item.queued_at < expired:
                item.future.set_exception(
                    Overloaded(
                        f"waited {self.timeout_s:g} s in the queue of model {self.model.name}; "
                        "retry shortly"
                    )
                )
                self._rejected.inc()
                self.statistics.failed(now - item.queued_at)
                continue
            if item.is_gone is not None and item.queued_at < waited_since and await item.is_gone():
                item.future.set_exception(ClientGone("client disconnected"))
                self._skipped.inc()
                self.statistics.failed(now - item.queued_at)
                continue
            live.append(item)
        return live

    async def _loop(self) -> None:
        while True:
            try:
                if not self._ahead or (len(self._ahead) == 1 and self._full_batch_waiting()):
                    self._hand_over(await self._live(await self._next_batch()))
                    continue
                await self._finish(*self._ahead[0])
                self._ahead.pop(0)
            finally:
                self._busy = bool(self._ahead)

    def _full_batch_waiting(self) -> bool:
        """Whether the next batch is already as large as waiting could make it."""
        waiting = [self._carry] if self._carry else []
        waiting += self._queue.head(self.policy.max_batch_size)
        return sum(item.size for item in waiting) >= self.policy.max_batch_size

    def _hand_over(self, items: list[_Item]) -> None:
        """Queue the model calls of a batch (one per kind of input) on the inference thread."""
        self._depth.set(self._queue.qsize())
        by_call: dict[BatchCall, list[_Item]] = {}
        for item in items:
            by_call.setdefault(item.call, []).append(item)
        loop = asyncio.get_running_loop()
        for call, same in by_call.items():
            joining = time.monotonic()
            batch = same[0].images if len(same) == 1 else call.join([i.images for i in same])
            total = sum(item.size for item in same)
            self._batch_size.observe(total)
            for item in same:
                item.batch = total
            execution = Execution(total, time.monotonic() - joining, 0.0)
            computing = loop.run_in_executor(self._executor, self._call, call, batch, execution)
            self._ahead.append((same, computing, execution))

    def _call(self, call: BatchCall, batch: Any, execution: Execution) -> tuple[Outputs, float]:
        """On the inference thread: the model call, timed (into ``execution``); the outputs
        and when the call started."""
        started = time.monotonic()
        try:
            return call.call(batch), started
        finally:
            execution.infer_s = time.monotonic() - started
            self._inference.observe(execution.infer_s)

    async def _finish(
        self,
        items: list[_Item],
        computing: asyncio.Future[tuple[Outputs, float]],
        execution: Execution,
    ) -> None:
        """Each of ``items`` gets its slice of the call's outputs, or its error."""
        try:
            outputs, started = await computing
        except Exception as exc:  # a failed call fails its requests, not the runner
            if not isinstance(exc, GraphDecodeFailed):  # that one the caller handles
                log.exception("inference failed for %s v%s", self.model.name, self.model.version)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
                    self.statistics.failed(time.monotonic() - item.queued_at)
            return
        slicing, start, answered = time.monotonic(), 0, []
        for item in items:
            if not item.future.done():
                item.future.set_result(
                    {name: value[start : start + item.size] for name, value in outputs.items()}
                )
                answered.append(item)
            start += item.size
        done = time.monotonic()
        execution.output_s = done - slicing
        self.statistics.executed(execution)
        for item in answered:
            self.statistics.succeeded(execution, started - item.queued_at, done - item.queued_at)
