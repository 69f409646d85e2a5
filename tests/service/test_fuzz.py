"""Every codec fuzzed through HTTP: whatever JSON value, form field or header bytes a client
sends, the answer is a 2xx or a 4xx in the API's error shape, never a 5xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.service.handwriting import draw_digit, encode

SEVEN = encode(draw_digit(7))
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# values at the edges of what a codec must refuse or take: huge integers, floats beyond
# float32, non-finite numbers, booleans, numeric strings, null, empty containers
edges = st.sampled_from(
    [
        10**401,
        -(10**400),
        2**64,
        2**63,
        1e308,
        -1e39,
        float("inf"),
        float("nan"),
        True,
        False,
        None,
        "0.5",
        "",
        {},
        [],
    ]
)
numbers = st.floats(0, 1) | st.integers(0, 255) | st.integers()
leaves = numbers | edges | st.text(max_size=8)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=40,
)
# pixel-shaped values: nested lists of the model's rank, mostly numbers
pixels = st.lists(
    st.lists(
        st.lists(st.lists(numbers | edges, min_size=1, max_size=1), min_size=1, max_size=28),
        min_size=1,
        max_size=28,
    ),
    min_size=1,
    max_size=2,
)
header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=255), max_size=30
) | st.sampled_from(["\xb2", "\xb9\xb3", "0" * 30, "9" * 5000, "Identity", " gzip"])
names = st.sampled_from(["image", "image_bytes", "digit", "odd", ""]) | st.text(max_size=10)


def _json(client, path: str, value, headers: dict | None = None):
    body = json.dumps(value, allow_nan=True).encode()
    return client.post(
        path, content=body, headers={"Content-Type": "application/json", **(headers or {})}
    )


def _assert_client_error_at_most(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert "error" in r.json()


tfserving_bodies = (
    json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "instances": json_values,
            "inputs": json_values,
            "examples": json_values,
            "signature_name": json_values,
        },
    )
    | st.one_of(
        *(
            st.fixed_dictionaries(
                {key: pixels}, optional={"signature_name": st.just("") | json_values}
            )
            for key in ("instances", "inputs", "examples")
        )
    )
)


@FUZZ
@given(body=tfserving_bodies)
@example(body={"instances": [10**401]})
@example(body={"examples": [[10**401]]})
@example(body={"instances": [[[[True]] * 28] * 28], "signature_name": {}})
@pytest.mark.parametrize("verb", ["predict", "classify"])
def test_tfserving_json(client, verb, body):
    _assert_client_error_at_most(_json(client, f"/v1/models/digit_odd:{verb}", body))


tensors = st.fixed_dictionaries(
    {
        "name": names,
        "shape": st.lists(st.integers(-2, 30) | st.integers(), max_size=5) | json_values,
        "datatype": st.sampled_from(["FP32", "BYTES", "INT8"]) | json_values,
    },
    optional={
        "data": json_values | pixels,
        "parameters": json_values
        | st.fixed_dictionaries({"binary_data_size": st.integers() | json_values}),
    },
)


pixel_tensors = st.fixed_dictionaries(
    {
        "name": st.just("image"),
        "shape": st.just([1, 28, 28, 1]) | st.lists(st.integers(0, 28), max_size=4),
        "datatype": st.just("FP32"),
        "data": pixels | json_values,
    }
)
oip_bodies = (
    json_values
    | st.fixed_dictionaries(
        {"inputs": st.lists(tensors, max_size=3)},
        optional={"outputs": json_values, "parameters": json_values, "id": json_values},
    )
    | st.fixed_dictionaries({"inputs": st.lists(pixel_tensors, min_size=1, max_size=1)})
)


@FUZZ
@given(body=oip_bodies)
@example(
    body={
        "inputs": [
            {
                "name": "image",
                "shape": [1, 28, 28, 1],
                "datatype": "FP32",
                "data": [10**401] + [0] * 783,
            }
        ]
    }
)
@example(
    body={
        "inputs": [
            {"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [True] * 784}
        ]
    }
)
def test_oip_json(client, body):
    _assert_client_error_at_most(_json(client, "/v2/models/digit_odd/infer", body))


@FUZZ
@given(length=header_text, encoding=header_text, tail=st.binary(max_size=64))
@example(length="\xb2", encoding="identity", tail=b"")
def test_oip_binary_headers(client, length, encoding, tail):
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tail)},
                }
            ]
        }
    ).encode()
    r = client.post(
        "/v2/models/digit_odd/infer",
        content=head + tail,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": length.encode("latin-1"),
            "Content-Encoding": encoding.encode("latin-1"),
        },
    )
    _assert_client_error_at_most(r)


form_fields = st.dictionaries(
    st.sampled_from(
        [
            "model",
            "version",
            "top_k",
            "layers",
            "scaling",
            "format",
            "output",
            "class_index",
            "layer",
            "junk",
        ]
    ),
    st.text(max_size=20) | st.integers(min_value=-(10**30), max_value=10**30).map(str),
    max_size=4,
)


@FUZZ
@given(fields=form_fields, data=st.binary(max_size=64) | st.just(SEVEN), content_type=header_text)
@pytest.mark.parametrize(
    "path", ["/predict", "/models/digit_odd/feature-maps", "/models/digit_odd/explain"]
)
def test_upload_forms(client, path, fields, data, content_type):
    r = client.post(path, data=fields, files={"file": ("x.png", data, content_type or "image/png")})
    _assert_client_error_at_most(r)


@FUZZ
@given(content_length=header_text, content_type=header_text, body=st.binary(max_size=64))
def test_raw_request_heads(client, content_length, content_type, body):
    headers = {"Content-Type": content_type.encode("latin-1")}
    if content_length:
        headers["Content-Length"] = content_length.encode("latin-1")
    try:
        r = client.post("/predict", content=body, headers=headers)
    except Exception as exc:  # noqa: BLE001 - a length the test client itself cannot honour
        pytest.skip(f"the client refused to send it: {exc}")
    _assert_client_error_at_most(r)


@pytest.fixture(scope="module")
def uploads_client(tmp_path_factory):
    from tests.service.conftest import admin_client

    with admin_client(
        model_dir=tmp_path_factory.mktemp("fuzz-models"), default_model="none", model_uploads=True
    ) as c:
        yield c


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(["version", "value_range", "preprocessing", "input_size", "junk"]),
        st.text(max_size=20) | st.sampled_from(["0,255", "-1,1", "9,1", "1e999,2", "0", "24,24"]),
        max_size=3,
    ),
    name=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
        min_size=1,
        max_size=12,
    ),
    filename=st.sampled_from(["m.keras", "m.h5", "m.txt", ""]),
    data=st.binary(max_size=64),
)
def test_model_upload_forms(uploads_client, fields, name, filename, data):
    r = uploads_client.post(
        f"/models/{name}/versions", data=fields, files={"file": (filename, data)}
    )
    _assert_client_error_at_most(r)
