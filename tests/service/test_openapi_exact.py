"""The OpenAPI document is exact where JSON Schema can be: every reference resolves, and the
protocols' request bodies that the service refuses for their structure (null where a tensor
goes, an example that is not an object, base64 that is not) are outside the schema, while the
bodies real clients send are inside it and answered 200. (A tensor's shape against the model
named in the path is beyond a schema shared by every model: a 400 says what the model takes.)"""

from __future__ import annotations

import base64

import jsonschema_rs
import pytest

from tests.service.handwriting import draw_digit, encode

PNG = base64.b64encode(encode(draw_digit(7))).decode()
PIXELS = [[[0.0]] * 28] * 28
OIP, TFS = "/v2/models/{name}/infer", "/v1/models/{name}:predict"
CLASSIFY = "/v1/models/{name}:classify"


def _refs(node: object):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.fixture(scope="module")
def document(client) -> dict:
    return client.get("/openapi.json").json()


def _body_schema(document: dict, path: str) -> jsonschema_rs.Validator:
    path = next(p for p in document["paths"] if p.replace(":model", "") == path)
    schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return jsonschema_rs.validator_for(
        {**schema["schema"], "components": document.get("components", {})}
    )


def test_every_reference_resolves(document):
    schemas = document.get("components", {}).get("schemas", {})
    refs = set(_refs(document))
    assert refs and all(
        ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas for ref in refs
    ), sorted(refs)


REFUSED = [
    (TFS, {"inputs": None}),
    (TFS, {"instances": [None]}),
    (TFS, {"instances": [{"b64": "not base64!"}]}),
    (TFS, {"instances": [{"image": {"b64": PNG}, "other": 1}]}),
    (CLASSIFY, {"examples": [None]}),
    (CLASSIFY, {"examples": [{"image": {"b64": "%%%"}}]}),
    (OIP, {"inputs": None}),
    (
        OIP,
        {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
    ),
    (
        OIP,
        {"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [0.5, None]}]},
    ),
    (OIP, {"inputs": [{"name": "image", "shape": [1], "datatype": "INT64", "data": [1]}]}),
]


@pytest.mark.parametrize(("path", "body"), REFUSED)
def test_bodies_refused_for_their_structure_are_outside_the_schema(client, document, path, body):
    assert not _body_schema(document, path).is_valid(body)
    answer = client.post(path.format(name="digit_odd"), json=body)
    assert answer.status_code == 400, answer.text  # and the service agrees


ACCEPTED = [
    (TFS, {"instances": [{"b64": PNG}]}),
    (TFS, {"instances": [{"image": {"b64": PNG}}], "signature_name": "serving_default"}),
    (TFS, {"instances": [PIXELS, PIXELS]}),
    (TFS, {"inputs": {"image": [PIXELS]}}),
    (TFS, {"inputs": [{"b64": PNG}]}),
    (CLASSIFY, {"examples": [{"image": {"b64": PNG}}]}),
    (OIP, {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [PNG]}]}),
    (
        OIP,
        {
            "inputs": [
                {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [0.0] * 784}
            ],
            "outputs": [{"name": "digit"}],
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), ACCEPTED)
def test_what_clients_send_is_inside_the_schema_and_answered(client, document, path, body):
    assert _body_schema(document, path).is_valid(body)
    answer = client.post(path.format(name="digit_odd"), json=body)
    assert answer.status_code == 200, answer.text
