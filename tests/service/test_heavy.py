"""Grad-CAM and feature maps under budgets: they run on the heavy-work thread, never on a
model's inference thread; over their bounds they answer 503 with Retry-After; traced graphs
live in a bounded cache; a feature-map answer's memory is costed before it is computed."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from PIL import Image

from service.gradcam import TracedCache
from service.inference import feature_map_cost
from tests.service.conftest import make_client
from tests.service.handwriting import draw_digit, encode

SEVEN = encode(draw_digit(7))


def _photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)))


def _explain(client, model: str = "digit_odd", data: bytes = SEVEN, **fields):
    return client.post(
        f"/models/{model}/explain",
        files={"file": ("x.png", data)},
        data={k: str(v) for k, v in fields.items()},
    )


def _maps(client, model: str, images: list[bytes], **fields):
    return client.post(
        f"/models/{model}/feature-maps",
        files=[("file", (f"{i}.png", data)) for i, data in enumerate(images)],
        data=fields,
    )


def _overloaded(r) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "overloaded"


def test_predict_does_not_wait_for_the_heavy_thread(models_dir):
    """With the heavy-work thread held, /predict of the same version answers at once, and
    the explain request waiting for that thread answers once it is free."""
    with make_client(model_dir=models_dir) as client:
        server = client.app.state.server
        release = threading.Event()
        server.heavy.submit(release.wait, 30)  # the heavy thread is busy until released
        explained: list = []
        waiting = threading.Thread(target=lambda: explained.append(_explain(client)))
        waiting.start()
        try:
            r = client.post("/predict", files={"file": ("d.png", SEVEN)})
            assert r.status_code == 200 and not explained  # explain still waits
        finally:
            release.set()
        waiting.join(30)
        assert explained[0].status_code == 200, explained[0].text


def test_explain_and_feature_maps_beyond_a_versions_bound_get_503(models_dir):
    with make_client(model_dir=models_dir, heavy_per_version=1) as client:
        runner = client.app.state.server.registry.runner("digit_odd")
        assert runner.heavy.try_acquire(1)  # one heavy request of this version in progress
        try:
            _overloaded(_explain(client))
            _overloaded(_maps(client, "digit_odd", [SEVEN]))
            assert _explain(client, "cifar10", _photo(0)).status_code == 200  # others go on
            assert client.post("/predict", files={"file": ("d.png", SEVEN)}).status_code == 200
        finally:
            client.portal.call(runner.heavy.release, 1)
        assert _explain(client).status_code == 200
        assert runner.heavy.used == 0 and client.app.state.server.admission.heavy.used == 0


def test_heavy_requests_beyond_the_process_bound_get_503(models_dir):
    """One heavy job at a time per process; with nobody allowed to wait, the next is 503,
    and with waiting allowed it gets 503 at the queue deadline."""
    for overrides in ({"max_heavy_waiting": 0}, {"queue_timeout_s": 0.2}):
        with make_client(model_dir=models_dir, **overrides) as client:
            budget = client.app.state.server.admission.heavy
            assert budget.try_acquire(1)
            try:
                _overloaded(_explain(client, "cifar10", _photo(0)))
                _overloaded(_maps(client, "digit_odd", [SEVEN]))
            finally:
                client.portal.call(budget.release, 1)
            assert _explain(client, "cifar10", _photo(0)).status_code == 200


def test_the_gradcam_cache_keeps_the_recently_used_within_its_bounds(models_dir):
    layers = ["image", "conv2d_layer", "maxpool_layer"]
    with make_client(model_dir=models_dir, gradcam_cache_entries=2) as client:
        cache: TracedCache = client.app.state.server.gradcams
        first = [_explain(client, layer=layer).json()["heatmap"] for layer in layers]
        assert len(cache) == 2  # "image" was evicted
        assert _explain(client, layer="image").json()["heatmap"] == first[0]  # traced again
        assert len(cache) == 2 and 0 < cache.bytes
    one_graph = cache.bytes // 2
    with make_client(model_dir=models_dir, gradcam_cache_bytes=one_graph) as client:
        cache = client.app.state.server.gradcams
        for layer in layers:
            assert _explain(client, layer=layer).status_code == 200
        assert len(cache) == 1 and cache.bytes <= one_graph * 1.5  # the newest always stays


def test_traced_cache_evicts_least_recently_used(digit_odd_model):
    import tensorflow as tf

    built: list[str] = []

    def build(name: str):
        built.append(name)
        return tf.function(lambda x: x * 2).get_concrete_function(tf.TensorSpec([1], tf.float32))

    cache = TracedCache(max_entries=2, max_bytes=2**40)
    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get(key, lambda key=key: build(key))
    # a b (a: hit) c evicts b; a: hit; b evicts c
    assert built == ["a", "b", "c", "b"] and len(cache) == 2


def test_feature_maps_over_the_request_limit_get_413_saying_what_fits(models_dir):
    photos = [_photo(i) for i in range(16)]
    with make_client(model_dir=models_dir, max_feature_map_bytes=24 * 2**20) as client:
        r = _maps(client, "cifar10_resnet", photos, format="npz")
        assert r.status_code == 413, r.text
        message = r.json()["error"]["message"]
        fits = int(re.search(r"send at most (\d+) image", message).group(1))
        assert 1 <= fits < 16 and "layers=" in message
        assert _maps(client, "cifar10_resnet", photos[:fits], format="npz").status_code == 200
        assert _maps(client, "cifar10_resnet", photos[: fits + 1], format="npz").status_code == 413
        # or every image, fewer layers
        r = _maps(client, "cifar10_resnet", photos, format="npz", layers="stage3_block3_out")
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        assert client.app.state.server.admission.feature_map_bytes.used == 0


@pytest.mark.parametrize("fmt", ["npz", "json"])
def test_the_cost_estimate_covers_the_answer(client, fmt):
    """The memory reserved is at least the answer's size (and not wildly more)."""
    photos = [_photo(i) for i in range(10)]
    r = _maps(client, "cifar10_resnet", photos, format=fmt)
    assert r.status_code == 200, r.text
    meta = client.app.state.server.registry.get("cifar10_resnet").metadata
    cost = feature_map_cost(meta, None, len(photos), fmt).total()
    assert len(r.content) < cost < 40 * len(r.content)


def test_feature_maps_wait_for_the_process_budget_then_503(models_dir):
    with make_client(model_dir=models_dir, queue_timeout_s=0.2) as client:
        budget = client.app.state.server.admission.feature_map_bytes
        assert budget.try_acquire(budget.capacity)  # others' answers hold all of it
        try:
            _overloaded(_maps(client, "digit_odd", [SEVEN]))
        finally:
            client.portal.call(budget.release, budget.capacity)
        assert _maps(client, "digit_odd", [SEVEN]).status_code == 200
        bad = _maps(client, "digit_odd", [b"not an image"])  # fails after its reservation
        assert bad.status_code == 400 and budget.used == 0
