"""POST /predict on the committed models, with images made as people make them."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.schemas import PredictResponse
from tests.service.handwriting import draw_digit, encode, on_transparent

DIGITS = range(10)


def predict(client, *files, **form):
    r = client.post("/predict", data=form, files=[("file", f) for f in files])
    assert r.status_code == 200, r.text
    PredictResponse.model_validate_json(r.content)  # the hot path answers the documented shape
    return r.json()


def digit_of(body, i=0):
    return body["predictions"][i]["outputs"]["digit"]["label"]


@pytest.mark.parametrize("digit", DIGITS)
def test_pen_on_paper_png(client, digit):
    body = predict(client, ("d.png", encode(draw_digit(digit)), "image/png"))
    assert digit_of(body) == str(digit)


def test_the_stronger_digit_model_reads_every_pen_digit_and_its_parity(client):
    """digit_odd_plus answers in digit_odd's shape, named by ?model=, and gets them right."""
    files = [(f"{d}.png", encode(draw_digit(d)), "image/png") for d in DIGITS]
    body = predict(client, *files, model="digit_odd_plus")
    assert body["model"] == "digit_odd_plus"
    assert [digit_of(body, d) for d in DIGITS] == [str(d) for d in DIGITS]
    odd = client.get("/models/digit_odd_plus").json()["outputs"][1]["labels"]
    assert [p["outputs"]["odd"]["label"] for p in body["predictions"]] == [
        odd[d % 2] for d in DIGITS
    ]


@pytest.mark.parametrize("digit", DIGITS)
def test_large_off_centre_jpeg_photo_with_uneven_light(client, digit):
    page = draw_digit(
        digit,
        canvas=(1200, 900),
        box=(820, 560, 260),
        pen=0.05,
        gradient=60,
        ink=60,
        paper=225,
        mode="RGB",
    )
    body = predict(client, ("photo.jpg", encode(page, "JPEG", quality=80), "image/jpeg"))
    assert digit_of(body) == str(digit)


@pytest.mark.parametrize("digit", DIGITS)
def test_small_corner_digit_with_transparency(client, digit):
    img = on_transparent(draw_digit(digit, canvas=(300, 300), box=(10, 12, 70), pen=0.12))
    body = predict(client, ("t.png", encode(img), "image/png"))
    assert digit_of(body) == str(digit)


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("WEBP", "RGB"),
        ("TIFF", "CMYK"),
        ("PNG", "P"),
        ("PNG", "I;16"),
    ],
)
def test_every_format_and_mode(client, fmt, mode):
    img = draw_digit(3)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img, np.uint16) * 257)
    else:
        img = img.convert(mode)
    body = predict(client, (f"d.{fmt.lower()}", encode(img, fmt), f"image/{fmt.lower()}"))
    assert digit_of(body) == "3"


def test_response_shape_and_odd_head(client):
    body = predict(client, ("d.png", encode(draw_digit(7)), "image/png"), top_k="3")
    assert body["model"] == "digit_odd" and body["version"] >= 1
    digit = body["predictions"][0]["outputs"]["digit"]
    assert digit["kind"] == "multiclass" and digit["index"] == 7
    assert digit["top_k"][0]["label"] == "7" and len(digit["top_k"]) == 3
    confidences = [s["confidence"] for s in digit["top_k"]]
    assert confidences == sorted(confidences, reverse=True)
    assert sum(digit["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert digit["confidence"] == digit["probabilities"]["7"]
    odd = body["predictions"][0]["outputs"]["odd"]
    assert odd["kind"] == "binary" and 0 <= odd["probability"] <= 1
    assert odd["label"] == ("odd" if odd["probability"] >= 0.5 else "even")
    t = body["timings"]
    assert t["total_ms"] >= t["decode_ms"] >= 0 and t["inference_ms"] >= 0


def test_odd_head_mostly_agrees_with_the_digit(client):
    files = [(f"{d}.png", encode(draw_digit(d)), "image/png") for d in DIGITS]
    body = predict(client, *files)
    agree = sum(
        p["outputs"]["odd"]["label"] == ("odd" if d % 2 else "even")
        for d, p in zip(DIGITS, body["predictions"])
    )
    assert agree >= 8  # the odd head is a linear model on raw pixels (~90 % on MNIST)


def test_several_images_in_one_request_keep_their_order(client):
    files = [(f"{d}.png", encode(draw_digit(d)), "image/png") for d in (4, 1, 9)]
    body = predict(client, *files)
    assert [p["filename"] for p in body["predictions"]] == ["4.png", "1.png", "9.png"]
    assert [digit_of(body, i) for i in range(3)] == ["4", "1", "9"]


def _corrupt_image_data(png: bytes) -> bytes:
    """``png`` with garbage compressed data in a well-formed IDAT chunk (valid CRC)."""
    length = struct.unpack(">I", png[33:37])[0]
    assert png[37:41] == b"IDAT"
    data = b"\x78\x9c" + bytes(range(7, 7 + length - 2))
    return png[:41] + data + struct.pack(">I", zlib.crc32(b"IDAT" + data)) + png[45 + length :]


@pytest.mark.parametrize(
    "model,image",
    [
        ("digit_odd", draw_digit(3, canvas=(28, 28), box=(6, 4, 20))),
        (
            "digit_odd",
            Image.fromarray(255 - np.asarray(draw_digit(5, canvas=(28, 28), box=(6, 4, 20)))),
        ),
        (
            "cifar10",
            Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)),
        ),
    ],
)
def test_png_in_the_input_format_is_decoded_in_the_graph_with_the_same_answer(client, model, image):
    graph = predict(client, ("x.png", encode(image), "image/png"), model=model)
    pillow = predict(client, ("x.bmp", encode(image, "BMP"), "image/bmp"), model=model)
    assert graph["timings"]["decode_ms"] == 0 < pillow["timings"]["decode_ms"]
    assert graph["predictions"][0]["outputs"] == pillow["predictions"][0]["outputs"]


def test_several_pngs_in_the_input_format_keep_their_order_and_mix_with_other_formats(client):
    small = {d: draw_digit(d, canvas=(28, 28), box=(6, 4, 20), pen=0.12) for d in (4, 7, 9)}
    pngs = [(f"{d}.png", encode(im), "image/png") for d, im in small.items()]
    body = predict(client, *pngs)
    assert body["timings"]["decode_ms"] == 0  # all three decoded in the graph
    assert [digit_of(body, i) for i in range(3)] == ["4", "7", "9"]
    mixed = predict(client, pngs[0], ("7.bmp", encode(small[7], "BMP"), "image/bmp"), pngs[2])
    assert mixed["timings"]["decode_ms"] > 0  # one BMP: the request takes the Pillow path
    assert [p["outputs"] for p in mixed["predictions"]] == [
        p["outputs"] for p in body["predictions"]
    ]


def test_corrupt_png_behind_a_valid_header_is_a_400_from_the_pillow_fallback(client):
    png = encode(draw_digit(3, canvas=(28, 28), box=(6, 4, 20)))
    r = client.post("/predict", files={"file": ("bad.png", _corrupt_image_data(png), "image/png")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"
    assert "bad.png" in r.json()["error"]["message"]
    assert digit_of(predict(client, ("ok.png", png, "image/png"))) == "3"


def _colour(size, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


@pytest.mark.parametrize("size", [(32, 32), (1024, 768)])
def test_cifar10_classifies_small_and_large_colour_images(client, size):
    body = predict(
        client, ("c.jpg", encode(_colour(size), "JPEG"), "image/jpeg"), model="cifar10", top_k="10"
    )
    out = body["predictions"][0]["outputs"]["class"]
    assert body["model"] == "cifar10"
    assert set(out["probabilities"]) == {
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    }
    assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert len(out["top_k"]) == 10 and out["top_k"][0]["label"] == out["label"]


def test_same_image_same_answer_alone_or_in_a_batch(client):
    imgs = [encode(_colour((32, 32), seed), "PNG") for seed in range(3)]
    together = predict(
        client, *[(f"{i}.png", b, "image/png") for i, b in enumerate(imgs)], model="cifar10"
    )
    for i, data in enumerate(imgs):
        alone = predict(client, ("x.png", data, "image/png"), model="cifar10")
        a = alone["predictions"][0]["outputs"]["class"]["probabilities"]
        b = together["predictions"][i]["outputs"]["class"]["probabilities"]
        assert a == pytest.approx(b, abs=1e-5)


def test_rotated_phone_photo_is_turned_upright(client):
    upright = draw_digit(7, canvas=(300, 400), box=(80, 100, 160))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # sensor orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    body = predict(
        client, ("p.jpg", encode(stored.convert("RGB"), "JPEG", exif=exif.tobytes()), "image/jpeg")
    )
    assert digit_of(body) == "7"
