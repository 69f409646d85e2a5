"""The /predict form parser, directly and through HTTP."""

import numpy as np
import pytest

from service.errors import BadRequest
from service.uploads import parse_form
from tests.service.handwriting import draw_digit, encode

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return (head + "\r\n").encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def test_files_in_order_and_fields():
    form = parse_form(
        body(
            part("file", b"\x89PNG one", "a.png", "image/png"),
            part("top_k", b"3"),
            part("file", b"two\r\n--not-a-boundary", "b.jpg", "image/jpeg"),
            part("model", "d\u00efgit".encode()),
        ),
        CONTENT_TYPE,
    )
    assert [(f.filename, f.data, f.content_type) for f in form.files] == [
        ("a.png", b"\x89PNG one", "image/png"),
        ("b.jpg", b"two\r\n--not-a-boundary", "image/jpeg"),
    ]
    assert form.fields == {"top_k": "3", "model": "d\u00efgit"}


def test_file_part_without_type_is_octet_stream():
    form = parse_form(body(part("file", b"xyz", "x")), CONTENT_TYPE)
    assert form.files[0].content_type == "application/octet-stream"


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain"])
def test_other_body_types_give_an_empty_form(ctype):
    form = parse_form(b'{"file": "x"}', ctype)
    assert form.files == [] and form.fields == {}


@pytest.mark.parametrize(
    "data,ctype",
    [
        (body(part("file", b"x", "x.png"))[:-12], CONTENT_TYPE),  # cut before the final boundary
        (b"no boundary here", CONTENT_TYPE),
        (body(part("file", b"x", "x.png")), "multipart/form-data"),  # boundary missing
        (body(part("model", b"\xff\xfe")), CONTENT_TYPE),  # a text field that is not UTF-8
    ],
)
def test_malformed_bodies_are_bad_requests(data, ctype):
    with pytest.raises(BadRequest, match="malformed"):
        parse_form(data, ctype)


def test_malformed_body_over_http_is_a_400_and_the_service_goes_on(client):
    png = encode(draw_digit(1))
    r = client.post(
        "/predict",
        content=body(part("file", png, "a.png", "image/png"))[:-12],
        headers={"content-type": CONTENT_TYPE},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = client.post(
        "/predict",
        content=body(part("file", png, "a.png", "image/png")),
        headers={"content-type": CONTENT_TYPE},
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["filename"] == "a.png"


def test_openapi_documents_the_hot_path(client):
    op = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and form["properties"]["file"]["items"]["format"] == (
        "binary"
    )
    assert {"model", "version", "top_k"} <= set(form["properties"])
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictResponse"
    )
    assert {"400", "404", "413", "415", "422", "503"} <= set(op["responses"])


def test_cut_and_random_multipart_bodies_are_4xx_never_500(client):
    whole = body(part("file", encode(draw_digit(5)), "a.png", "image/png"), part("top_k", b"2"))
    rng = np.random.default_rng(11)
    bodies = [whole[:cut] for cut in range(0, len(whole), 37)]
    bodies += [rng.integers(0, 256, n, np.uint8).tobytes() for n in (1, 50, 2000)]
    bodies += [f"--{BOUNDARY}\r\n".encode() + rng.integers(0, 256, 300, np.uint8).tobytes()]
    for data in bodies:
        r = client.post("/predict", content=data, headers={"content-type": CONTENT_TYPE})
        assert r.status_code in (400, 422), (len(data), r.text)
        assert r.json()["error"]["code"] in ("bad_request", "invalid_parameter")
    assert (
        client.post("/predict", content=whole, headers={"content-type": CONTENT_TYPE}).status_code
        == 200
    )
