"""Request IDs and the access log: every answer carries an ID, every request leaves one JSON
line with route, API, model, version, status, latency and batch size."""

from __future__ import annotations

import json
import logging

from service.logs import JsonFormatter
from tests.service.handwriting import draw_digit, encode

DIGIT = encode(draw_digit(3))


def _lines(caplog) -> list[dict]:
    """The access lines of the captured records, as the JSON formatter writes them."""
    return [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "cnn_serve.access"
    ]


def test_request_ids_are_accepted_or_generated_and_echoed(client):
    given = client.get("/health/live", headers={"X-Request-ID": "req-42.a:b"})
    assert given.headers["x-request-id"] == "req-42.a:b"
    fresh = [client.get("/health/live").headers["x-request-id"] for _ in range(2)]
    assert fresh[0] != fresh[1] and all(len(i) == 32 and int(i, 16) >= 0 for i in fresh)
    for hostile in ("x" * 129, "two words", "evil\x7f"):
        echoed = client.get("/health/live", headers={"X-Request-ID": hostile})
        assert echoed.headers["x-request-id"] != hostile
        assert len(echoed.headers["x-request-id"]) == 32
    refused = client.post("/predict", content=b"x" * 11_000_000)  # the body guard's 413
    assert refused.status_code == 413 and len(refused.headers["x-request-id"]) == 32


def test_one_json_line_per_request_with_what_it_did(client, caplog):
    with caplog.at_level(logging.INFO, logger="cnn_serve.access"):
        client.post(
            "/predict", files={"file": ("d.png", DIGIT)}, headers={"X-Request-ID": "trace-1"}
        )
        client.post(
            "/v2/models/cifar10/infer", json={"inputs": []}, headers={"X-Request-ID": "trace-2"}
        )
    first, second = _lines(caplog)[-2:]
    assert first["request_id"] == "trace-1" and first["message"] == "request"
    assert {k: first[k] for k in ("method", "route", "protocol", "status", "model", "version")} == {
        "method": "POST",
        "route": "/predict",
        "protocol": "native",
        "status": 200,
        "model": "digit_odd",
        "version": 1,
    }
    assert first["batch_size"] >= 1 and first["latency_ms"] > 0
    assert (second["request_id"], second["route"], second["protocol"], second["status"]) == (
        "trace-2",
        "/v2/models/{name}/infer",
        "oip_v2",
        400,
    )
    assert "model" not in second  # refused before it reached a model


def test_lines_written_while_serving_carry_the_request_id(caplog):
    """Whatever logs during a request (an error handler, the runner) names the request."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from service.drain import Drain
    from service.logs import configure
    from service.middleware import RequestGate

    async def failing(request):
        logging.getLogger("cnn_serve").error("something went wrong inside")
        return PlainTextResponse("ok")

    configure("info", "json")
    app = RequestGate(
        Starlette(routes=[Route("/x", failing)]), Drain(0), body_limit=100, idle_s=1, total_s=1
    )
    with caplog.at_level(logging.INFO), TestClient(app) as client:
        client.get("/x", headers={"X-Request-ID": "trace-3"})
    inside = next(r for r in caplog.records if r.getMessage() == "something went wrong inside")
    line = json.loads(JsonFormatter().format(inside))
    assert (line["request_id"], line["level"], line["logger"]) == ("trace-3", "error", "cnn_serve")
    outside = logging.LogRecord("cnn_serve", logging.INFO, __file__, 1, "after", None, None)
    assert "request_id" not in json.loads(JsonFormatter().format(outside))


def test_access_lines_are_written_in_whole_line_blocks_no_larger_than_a_pipe_takes_at_once():
    """Workers share one pipe: a write of more than PIPE_BUF bytes could interleave with
    another worker's mid-line, so the writer's blocks are whole lines within it."""
    import io
    import select

    from service.logs import AccessWriter

    class Recording(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

    stream = Recording()
    writer = AccessWriter(stream)
    writer.setFormatter(JsonFormatter())
    for i in range(200):
        record = logging.LogRecord(
            "cnn_serve.access", logging.INFO, __file__, 0, "request", None, None
        )
        record.fields = {"route": "/predict", "n": i, "pad": "x" * (i % 97)}
        writer.emit(record)
    writer.flush()
    assert len(stream.writes) > 5  # in blocks, not one write per line nor one in all
    assert all(len(w.encode()) <= select.PIPE_BUF and w.endswith("\n") for w in stream.writes)
    lines = "".join(stream.writes).splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(200))
