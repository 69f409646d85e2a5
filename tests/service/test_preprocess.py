"""The pure preprocessing functions on tiny images made here."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from service.errors import DecompressionBomb, EmptyImage, InvalidImage, UnsupportedMediaType
from service.preprocess import decode, flatten, resize, to_mnist
from tests.service.handwriting import draw_digit, encode, on_transparent
from training.metadata import InputSpec

BIG = 10**8


def test_decode_rejects_empty_and_garbage():
    with pytest.raises(EmptyImage):
        decode(b"", BIG)
    with pytest.raises(InvalidImage, match="upload.png: not a decodable image"):
        decode(b"\x89PNG\r\n\x1a\n garbage", BIG, "upload.png")


def test_decode_rejects_truncated_image():
    data = encode(draw_digit(3), "PNG")
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode(data[: len(data) // 2], BIG)


def test_decode_refuses_unsupported_formats():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "ICO")
    with pytest.raises(UnsupportedMediaType, match="ICO"):
        decode(buf.getvalue(), BIG)


def test_decode_refuses_decompression_bombs():
    data = encode(Image.new("1", (12_000, 12_000)), "PNG")  # ~20 kB, 144 megapixels
    assert len(data) < 100_000
    with pytest.raises(DecompressionBomb, match="exceeds the limit"):
        decode(data, 40_000_000)


def test_decode_applies_exif_orientation():
    image = Image.new("L", (40, 20), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(image, "JPEG", exif=exif.tobytes())
    assert decode(data, BIG).size == (20, 40)


def test_flatten_composites_alpha_onto_contrasting_background():
    dark_ink = flatten(on_transparent(draw_digit(7)))
    assert dark_ink.getpixel((0, 0)) == (255, 255, 255)  # paper white, ink dark
    light = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    light.paste((250, 250, 250, 255), (3, 3, 7, 7))
    assert flatten(light).getpixel((0, 0)) == (0, 0, 0)


def test_flatten_converts_palette_cmyk_and_16_bit():
    assert flatten(Image.new("P", (4, 4))).mode == "RGB"
    assert flatten(Image.new("CMYK", (4, 4), (0, 0, 0, 255))).getpixel((0, 0)) == (0, 0, 0)
    sixteen = Image.fromarray(np.full((4, 4), 65535 // 2, np.uint16))
    value = flatten(sixteen).getpixel((0, 0))
    assert 120 <= value <= 135  # scaled to 8 bits, not clipped to 255


def test_resize_antialiases_to_the_input_size():
    stripes = np.zeros((320, 320, 3), np.uint8)
    stripes[::2] = 255  # one-pixel stripes average to mid-gray when shrunk properly
    out = resize(
        Image.fromarray(stripes),
        InputSpec(shape=[32, 32, 3], color_mode="rgb", preprocessing="resize"),
    )
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert 0.4 < out.mean() < 0.6 and out.std() < 0.05


def _mnist_like(arr: np.ndarray) -> None:
    img = arr[..., 0]
    assert arr.shape == (28, 28, 1) and img.max() == pytest.approx(1.0, abs=0.05)
    assert img.min() >= 0.0
    rows, cols = np.nonzero(img > 0.05)
    assert rows.max() - rows.min() <= 21 and cols.max() - cols.min() <= 21
    cy, cx = ndimage.center_of_mass(img)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert img[:2].max() < 0.05 and img[-2:].max() < 0.05  # a margin, as in MNIST


def test_mnist_normalisation_of_a_pen_digit_off_centre_on_a_large_page():
    page = draw_digit(4, canvas=(900, 700), box=(650, 450, 200), pen=0.04, gradient=50, mode="RGB")
    arr = to_mnist(decode(encode(page, "JPEG", quality=85), BIG))
    _mnist_like(arr)


def test_polarity_does_not_matter():
    dark_on_light = to_mnist(draw_digit(2))
    light_on_dark = to_mnist(Image.eval(draw_digit(2), lambda v: 255 - v))
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=0.05)
    _mnist_like(dark_on_light)


def test_tall_digit_keeps_its_aspect_ratio():
    arr = to_mnist(draw_digit(1, pen=0.08))[..., 0]
    rows, cols = np.nonzero(arr > 0.2)
    assert rows.max() - rows.min() >= 18  # the long side spans the 20-pixel box
    assert cols.max() - cols.min() <= 10  # the narrow side is not stretched


def test_blank_page_gives_blank_input():
    assert to_mnist(Image.new("L", (50, 50), 240)).max() == 0.0


def test_mnist_sized_uploads_are_taken_as_mnist_data():
    """A 28x28 upload is already normalised: only grayscale and polarity are applied."""
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:15] = 255  # an off-centre "1", light on dark, as in MNIST files
    as_is = to_mnist(Image.fromarray(digit))[..., 0]
    np.testing.assert_allclose(as_is, digit / 255.0)
    inverted = to_mnist(Image.fromarray(255 - digit).convert("RGB"))[..., 0]
    np.testing.assert_allclose(inverted, digit / 255.0)
