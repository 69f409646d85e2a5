"""Prometheus metrics at /metrics, read back with prometheus-client's own parser."""

from prometheus_client.parser import text_string_to_metric_families

from tests.service.handwriting import draw_digit, encode


def samples(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found, name, **labels):
    want = tuple(sorted(labels.items()))
    return sum(v for (n, ls), v in found.items() if n == name and set(want) <= set(ls))


def test_requests_latency_batches_and_load_time_are_exported(client):
    before = samples(client)
    for _ in range(3):
        assert client.post("/predict", files={"file": ("d.png", encode(draw_digit(1)))}
                           ).status_code == 200
    client.post("/predict", data={"model": "nope"}, files={"file": ("d.png", b"x")})
    after = samples(client)

    def grew(name, by, **labels):
        assert value(after, name, **labels) - value(before, name, **labels) == by, (name, labels)

    grew("cnn_serve_requests_total", 3, route="/predict", model="digit_odd", status="200")
    grew("cnn_serve_requests_total", 1, route="/predict", status="404")
    grew("cnn_serve_request_seconds_count", 3, route="/predict", model="digit_odd")
    grew("cnn_serve_batch_size_count", 3, model="digit_odd")
    grew("cnn_serve_inference_seconds_count", 3, model="digit_odd")
    assert value(after, "cnn_serve_model_load_seconds", model="digit_odd") > 0
    assert value(after, "cnn_serve_model_ready", model="cifar10") == 1
    assert any(name == "cnn_serve_queue_depth" for name, _ in after)
