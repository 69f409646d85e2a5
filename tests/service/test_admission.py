"""Admission budgets: first come first served, bounded waiting, a deadline, nothing leaked;
and over HTTP, a request the process cannot take is refused before its body is read."""

import asyncio

import httpx
import pytest

from service.admission import Admission, Budget
from service.app import create_app
from service.errors import Overloaded
from service.settings import Settings
from tests.service.handwriting import draw_digit, encode


def run(coro):
    return asyncio.run(coro)


def later() -> float:
    """A waiting deadline that never comes during a test."""
    return asyncio.get_running_loop().time() + 60


def test_waiters_are_served_in_order_as_capacity_frees():
    async def scenario():
        budget = Budget("test", 3, max_waiting=10)
        await budget.acquire(3, later())
        order = []

        async def take(name, amount):
            await budget.acquire(amount, later())
            order.append(name)

        tasks = [asyncio.create_task(take(n, a)) for n, a in (("a", 2), ("b", 1), ("c", 1))]
        await asyncio.sleep(0)
        assert order == [] and budget.waiting == 3
        budget.release(2)  # a (2) fits; b waits behind it though 1 would fit too
        await asyncio.sleep(0)
        assert order == ["a"]
        budget.release(1)
        budget.release(1)
        await asyncio.gather(*tasks)
        return order, budget.used

    assert run(scenario()) == (["a", "b", "c"], 3)


async def held_with_waiters(capacity: int, held: int, *amounts: int):
    """A budget with ``held`` taken and tasks waiting for ``amounts``, in that order."""
    budget = Budget("test", capacity, max_waiting=10)
    await budget.acquire(held, later())
    tasks = [asyncio.create_task(budget.acquire(amount, later())) for amount in amounts]
    await asyncio.sleep(0)
    return budget, tasks


def test_a_large_waiter_that_gives_up_lets_smaller_ones_through():
    async def scenario():
        budget, (large, small) = await held_with_waiters(4, 3, 4, 1)
        assert not small.done()  # first come, first served
        large.cancel()
        await asyncio.gather(large, return_exceptions=True)
        await small
        return budget.used, budget.waiting

    assert run(scenario()) == (4, 0)


def test_capacity_freed_while_a_cancelled_waiter_has_not_resumed_goes_to_the_next():
    """A waiter's wait is cancelled (its client left), and before its task runs again another
    request releases capacity: the capacity goes to the next waiter, once."""

    async def scenario():
        budget, (first, second) = await held_with_waiters(1, 1, 1, 1)
        first.cancel()
        budget.release(1)  # first's future is cancelled but its task has not resumed yet
        await asyncio.gather(first, return_exceptions=True)
        await second
        return first.cancelled(), budget.used, budget.waiting

    assert run(scenario()) == (True, 1, 0)


def test_beyond_the_waiting_bound_requests_are_refused_at_once():
    async def scenario():
        budget = Budget("test", 1, max_waiting=1)
        await budget.acquire(1, later())
        waiter = asyncio.create_task(budget.acquire(1, later()))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await budget.acquire(1, later())
        budget.release(1)
        await waiter
        return info.value

    error = run(scenario())
    assert error.status == 503 and error.headers == {"Retry-After": "1"}


def test_waiting_past_the_deadline_is_a_503_and_releases_everything():
    async def scenario():
        admission = Admission(
            max_requests=2,
            max_waiting=10,
            body_bytes=100,
            decode_pixels=100,
            timeout_s=0.05,
            heavy_waiting=1,
            feature_map_bytes=100,
        )
        async with admission.reserve(body_bytes=100):
            with pytest.raises(Overloaded) as info:
                async with admission.reserve(requests=1, body_bytes=1):
                    pass
        return info.value, admission.requests.used, admission.body_bytes.used

    error, requests, body_bytes = run(scenario())
    assert "body_bytes" in error.message and error.headers == {"Retry-After": "1"}
    assert (requests, body_bytes) == (0, 0)  # the slot taken before the wait was given back


def test_a_request_the_process_cannot_take_is_refused_before_its_body_is_read(models_dir):
    """One upload holds the only request slot while its body trickles in; the next gets a
    503 at once, and not one byte of its body is read."""
    png = encode(draw_digit(2))
    boundary = "b"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"'
        f"\r\nContent-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}

    async def scenario():
        app = create_app(
            Settings(
                model_dir=models_dir,
                device="cpu",
                max_concurrent_requests=1,
                max_waiting_requests=0,
            )
        )
        release, admitted, read = asyncio.Event(), asyncio.Event(), []

        async def slow_body():  # read once the request is admitted
            admitted.set()
            yield head
            await release.wait()
            yield png + tail

        async def watched_body():
            read.append("read")
            yield head + png + tail

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                first = asyncio.create_task(
                    client.post("/predict", content=slow_body(), headers=headers)
                )
                await asyncio.wait_for(admitted.wait(), 10)
                assert app.state.server.admission.requests.used == 1
                second = await client.post("/predict", content=watched_body(), headers=headers)
                release.set()
                return (await first), second, read

    first, second, read = run(scenario())
    assert (
        first.status_code == 200
        and first.json()["predictions"][0]["outputs"]["digit"]["label"] == "2"
    )
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert second.json()["error"]["code"] == "overloaded"
    assert read == []
