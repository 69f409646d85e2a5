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
        assert (
            client.post("/predict", files={"file": ("d.png", encode(draw_digit(1)))}).status_code
            == 200
        )
    client.post("/predict", data={"model": "nope"}, files={"file": ("d.png", b"x")})
    after = samples(client)

    def grew(name, by, **labels):
        assert value(after, name, **labels) - value(before, name, **labels) == by, (name, labels)

    grew("cnn_serve_requests_total", 3, route="/predict", protocol="native", status="200")
    grew("cnn_serve_requests_total", 1, route="/predict", status="404")
    grew("cnn_serve_request_seconds_count", 4, route="/predict", protocol="native")
    grew("cnn_serve_model_requests_total", 3, model="digit_odd", version="1")
    grew("cnn_serve_batch_size_count", 3, model="digit_odd")
    grew("cnn_serve_inference_seconds_count", 3, model="digit_odd")
    assert value(after, "cnn_serve_model_load_seconds", model="digit_odd") > 0
    assert value(after, "cnn_serve_model_ready", model="cifar10") == 1
    assert any(name == "cnn_serve_queue_depth" for name, _ in after)


def test_names_and_methods_clients_make_up_do_not_grow_the_metrics(client):
    """Labels come from bounded sets: 2,000 requests for made-up models (and methods) once
    grew /metrics from 17 KB to 91 MB."""

    def probe(i: int) -> None:
        client.get(f"/models/no-such-model-{i}")
        client.post(f"/models/no-such-model-{i}/feature-maps", files={"file": ("a", b"x")})
        client.request(f"BREW{i}", "/predict")
        client.get(f"/no/such/route/{i}")

    probe(0)  # every label combination these requests use now exists
    size = len(client.get("/metrics").content)
    for i in range(1, 501):
        probe(i)
    assert len(client.get("/metrics").content) <= size * 1.05
    found = samples(client)
    assert value(found, "cnn_serve_requests_total", route="/models/{name}", status="404") >= 501
    assert value(found, "cnn_serve_requests_total", method="other") >= 501
