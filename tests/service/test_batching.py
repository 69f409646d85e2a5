"""The per-model runner: coalescing, equal answers, backpressure, clients that went away."""

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Runner
from service.errors import ClientGone, ModelNotReady, Overloaded
from service.model import GraphDecodeFailed
from service.preprocess import decode, to_model_input
from service.settings import BatchPolicy
from tests.service.handwriting import draw_digit, encode


class SlowEcho:
    """A stand-in model: records batch sizes; blocks until released, to let a queue form."""

    name, version = "echo", 1

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.entered = threading.Event()  # a call is on the inference thread
        self.release = threading.Event()

    async def busy(self) -> None:
        """Until a call occupies the inference thread."""
        assert await asyncio.to_thread(self.entered.wait, 5)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.entered.set()
        self.release.wait(5)
        self.batches.append(len(batch))
        return {"sum": batch.reshape(len(batch), -1).sum(axis=1)}


def run(coro):
    return asyncio.run(coro)


async def queued_behind_a_busy_call(
    policy: BatchPolicy, sizes, width: int = 1, timeout_s: float = 5
):
    """A runner whose thread is busy with a first request while requests of ``sizes`` queue;
    returns the model, the runner and the tasks (first one included), not yet released."""
    model = SlowEcho()
    runner = Runner(model, policy, timeout_s=timeout_s, heavy_limit=1)
    runner.start()
    first = asyncio.create_task(runner.predict(np.full((1, width), 1.0)))
    await model.busy()
    rest = [asyncio.create_task(runner.predict(np.full((n, width), float(n)))) for n in sizes]
    await asyncio.sleep(0)  # one turn of the loop: each task queues its request
    return model, runner, [first, *rest]


def test_concurrent_requests_are_coalesced_and_routed_back():
    async def scenario():
        model, runner, tasks = await queued_behind_a_busy_call(
            BatchPolicy(max_batch_size=64, max_delay_ms=0), (1, 2, 3, 4), width=2
        )
        model.release.set()
        results = await asyncio.gather(*tasks)
        await runner.close()
        return model.batches, results

    batches, results = run(scenario())
    assert batches == [1, 10]  # four queued requests -> one model call
    for n, result in zip((1, 1, 2, 3, 4), results):
        assert result["sum"].tolist() == [2.0 * n] * n


def test_max_batch_size_is_respected_without_splitting_requests():
    async def scenario():
        model, runner, tasks = await queued_behind_a_busy_call(
            BatchPolicy(max_batch_size=4, max_delay_ms=0), (3, 2, 2, 1)
        )
        model.release.set()
        await asyncio.gather(*tasks)
        await runner.close()
        return model.batches

    assert run(scenario()) == [1, 3, 4, 1]  # 3 | 2+2 | 1: a request is never split


class Gated:
    """A stand-in model whose n-th call waits until ``gates[n]`` opens."""

    name, version = "gated", 1

    def __init__(self, calls: int) -> None:
        self.gates = [threading.Event() for _ in range(calls)]
        self.entered = [threading.Event() for _ in range(calls)]
        self.done = 0

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        n = sum(e.is_set() for e in self.entered)
        self.entered[n].set()
        self.gates[n].wait(5)
        self.done += 1
        return {"sum": batch.reshape(len(batch), -1).sum(axis=1)}


def test_a_full_batch_waiting_starts_without_the_event_loop():
    """A full batch queued behind a running call is already on the inference thread's queue:
    it starts when that call ends even while the event loop is busy elsewhere."""

    async def scenario():
        model = Gated(3)
        runner = Runner(model, BatchPolicy(max_batch_size=4), timeout_s=5, heavy_limit=1)
        runner.start()
        first = asyncio.create_task(runner.predict(np.ones((1, 1))))
        await asyncio.to_thread(model.entered[0].wait, 5)
        full = [asyncio.create_task(runner.predict(np.ones((4, 1)))) for _ in range(2)]
        await asyncio.sleep(0)  # both queue
        model.gates[0].set()
        assert await asyncio.to_thread(model.entered[1].wait, 5)  # the first full batch runs
        model.gates[1].set()
        model.gates[2].set()
        time.sleep(0.5)  # noqa: ASYNC251 - the event loop is busy: nothing is handed over
        done_while_busy = model.done
        await asyncio.gather(first, *full)
        await runner.close()
        return done_while_busy

    assert run(scenario()) == 3


def test_full_queue_answers_overloaded_at_once():
    async def scenario():
        model = SlowEcho()
        runner = Runner(
            model, BatchPolicy(max_batch_size=1, max_queue=2), timeout_s=5, heavy_limit=1
        )
        runner.start()
        busy = asyncio.create_task(runner.predict(np.zeros((1, 1))))
        await model.busy()
        queued = [asyncio.create_task(runner.predict(np.zeros((1, 1)))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await runner.predict(np.zeros((1, 1)))
        model.release.set()
        await asyncio.gather(busy, *queued)
        await runner.close()
        return info.value

    error = run(scenario())
    assert error.status == 503 and error.headers == {"Retry-After": "1"}


def test_requests_that_waited_past_the_deadline_get_503_and_are_not_computed():
    async def scenario():
        model, runner, tasks = await queued_behind_a_busy_call(
            BatchPolicy(max_batch_size=64), (1, 2), timeout_s=0.02
        )
        await asyncio.sleep(0.05)  # time passes: the queued requests' deadline with it
        model.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        fresh = await runner.predict(np.full((1, 1), 3.0))  # a new request is served
        await runner.close()
        return model.batches, results, fresh

    batches, (first, *late), fresh = run(scenario())
    assert batches == [1, 1]  # the busy call and the fresh one; the late ones never ran
    assert first["sum"].tolist() == [1.0] and fresh["sum"].tolist() == [3.0]
    assert all(isinstance(e, Overloaded) and e.headers == {"Retry-After": "1"} for e in late)


def test_requests_whose_client_has_gone_are_not_computed():
    async def scenario():
        model = SlowEcho()
        runner = Runner(model, BatchPolicy(max_batch_size=64), timeout_s=5, heavy_limit=1)
        runner.start()
        busy = asyncio.create_task(runner.predict(np.zeros((1, 1))))
        await model.busy()

        async def gone() -> bool:
            return True

        abandoned = asyncio.create_task(runner.predict(np.zeros((5, 1)), is_gone=gone))
        kept = asyncio.create_task(runner.predict(np.zeros((2, 1))))
        await asyncio.sleep(0.1)  # time passes, longer than GONE_CHECK_AFTER_S: worth asking
        model.release.set()
        await busy
        assert (await kept)["sum"].shape == (2,)
        with pytest.raises(ClientGone):
            await abandoned
        await runner.close()
        return model.batches

    assert run(scenario()) == [1, 2]


def test_batched_answers_equal_single_answers(digit_odd_model):
    model = digit_odd_model
    images = np.random.default_rng(0).random((12, 28, 28, 1), np.float32)

    async def scenario():
        runner = Runner(
            model, BatchPolicy(max_batch_size=64, max_delay_ms=20), timeout_s=5, heavy_limit=1
        )
        runner.start()
        batched = await asyncio.gather(*(runner.predict(images[i : i + 1]) for i in range(12)))
        await runner.close()
        return batched

    batched = run(scenario())
    for i, result in enumerate(batched):
        single = model.predict(images[i : i + 1])
        # same answer; float32 kernels for other batch shapes may differ in the last bits
        assert result["digit"].argmax() == single["digit"].argmax()
        assert (result["odd"] >= 0.5) == (single["odd"] >= 0.5)
        for name in ("digit", "odd"):
            np.testing.assert_allclose(result[name], single[name], atol=1e-5)


def test_closing_answers_queued_requests_instead_of_leaving_them_waiting():
    async def scenario():
        model, runner, (busy, queued) = await queued_behind_a_busy_call(
            BatchPolicy(max_batch_size=1), (1,)
        )
        await runner.close()  # while the first call still holds the inference thread
        model.release.set()
        with pytest.raises(ModelNotReady):
            await queued
        busy.cancel()

    run(scenario())


def test_arrays_pngs_and_jpegs_in_one_batch_each_get_their_answers(digit_odd_model):
    """A batch with decoded images, PNGs and JPEGs runs one model call per kind of call (the
    graph decodes one format a call); a PNG the graph can't decode fails only the PNG requests
    of its batch, with the error the caller falls back on."""
    model = digit_odd_model
    digits = [draw_digit(d, canvas=(28, 28), box=(6, 4, 20)) for d in (2, 7)]
    pngs = [encode(digit) for digit in digits]
    jpegs = [encode(digit, "JPEG") for digit in digits]
    arrays = [to_model_input(decode(png, 10**8), model.metadata.input)[None] for png in pngs]
    jpeg_arrays = [to_model_input(decode(j, 10**8), model.metadata.input) for j in jpegs]

    def call(item):
        if not isinstance(item, list):
            return None
        return model.encoded["jpeg" if item[0].startswith(b"\xff\xd8") else "png"]

    async def scenario(items):
        runner = Runner(
            model, BatchPolicy(max_batch_size=64, max_delay_ms=50), timeout_s=5, heavy_limit=1
        )
        runner.start()
        results = await asyncio.gather(
            *(runner.predict(i, call=call(i)) for i in items), return_exceptions=True
        )
        await runner.close()
        return results

    a2, a7, p2, p7, j27 = run(
        scenario([arrays[0], arrays[1], [pngs[0]], [pngs[1]], [jpegs[0], jpegs[1]]])
    )
    assert [r["digit"].argmax() for r in (a2, a7, p2, p7)] == [2, 7, 2, 7]
    assert list(j27["digit"].argmax(axis=1)) == [2, 7]
    np.testing.assert_allclose(p7["digit"], a7["digit"], atol=1e-5)
    np.testing.assert_allclose(
        j27["digit"], model.predict(np.stack(jpeg_arrays))["digit"], atol=1e-5
    )

    corrupt = pngs[0][:41] + bytes(len(pngs[0]) - 53) + pngs[0][-12:]
    a2, good, bad = run(scenario([arrays[0], [pngs[1]], [corrupt]]))
    assert a2["digit"].argmax() == 2
    assert isinstance(good, GraphDecodeFailed) and isinstance(bad, GraphDecodeFailed)
