"""PNGs decoded in the TensorFlow graph give exactly what the Pillow path gives, and only
PNGs the graph can decode exactly are sent there."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from service import graph_decode
from service.model import ServedModel
from service.preprocess import decode, to_model_input
from tests.service.handwriting import draw_digit, encode
from training.metadata import InputSpec

MNIST = InputSpec(shape=[28, 28, 1], color_mode="grayscale", preprocessing="mnist")
CIFAR = InputSpec(shape=[32, 32, 3], color_mode="rgb", preprocessing="resize")
GRAY_RESIZE = InputSpec(shape=[32, 32, 1], color_mode="grayscale", preprocessing="resize")
RNG = np.random.default_rng(3)


def noise(size: int, channels: int, low: int = 0, high: int = 256) -> Image.Image:
    pixels = RNG.integers(low, high, (size, size, channels), np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels)


def with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR."""
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return png[:33] + chunk + png[33:]


def text_chunks() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a scanner")
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"sRGB", b"\x00")
    return info


def pillow_path(png: bytes, spec: InputSpec) -> np.ndarray:
    return to_model_input(decode(png, 10**8), spec)


def graph_path(pngs: list[bytes], spec: InputSpec) -> np.ndarray:
    return graph_decode.decoder(spec)(np.array(pngs, object)).numpy()


MNIST_PNGS = {
    "pen digit, dark on light": encode(draw_digit(4, canvas=(28, 28), box=(6, 4, 20))),
    "MNIST style, light on dark": encode(
        Image.fromarray(255 - np.asarray(draw_digit(9, canvas=(28, 28), box=(6, 4, 20))))
    ),
    "noise": encode(noise(28, 1)),
    "light noise": encode(noise(28, 1, 100)),
    "interlaced": encode(draw_digit(2, canvas=(28, 28), box=(6, 4, 20)), interlace=1),
    "unfiltered, uncompressed": encode(noise(28, 1), compress_level=0),
    "text, gamma, sRGB chunks": encode(noise(28, 1), pnginfo=text_chunks()),
}
CIFAR_PNGS = {
    "rgb noise": encode(noise(32, 3)),
    "gray noise": encode(noise(32, 1)),
    "interlaced rgb": encode(noise(32, 3), interlace=1),
    "rgb with chunks": encode(noise(32, 3), pnginfo=text_chunks()),
}


@pytest.mark.parametrize(
    "spec,pngs",
    [(MNIST, MNIST_PNGS), (CIFAR, CIFAR_PNGS), (GRAY_RESIZE, {"gray": encode(noise(32, 1))})],
    ids=["mnist", "rgb resize", "gray resize"],
)
def test_graph_and_pillow_give_the_same_input_bit_for_bit(spec, pngs):
    assert all(graph_decode.decodable(png, spec) for png in pngs.values())
    got = graph_path(list(pngs.values()), spec)
    for (name, png), array in zip(pngs.items(), got):
        np.testing.assert_array_equal(array, pillow_path(png, spec), err_msg=name)


def test_border_tie_keeps_polarity_like_pillow():
    pixels = np.zeros((28, 28), np.uint8)
    pixels[0, :] = pixels[-1, :] = 255  # light exactly on half the border samples
    png = encode(Image.fromarray(pixels))
    np.testing.assert_array_equal(graph_path([png], MNIST)[0], pillow_path(png, MNIST))


def test_batches_of_any_size_decode_each_image_in_its_place():
    # whole groups of GROUP are decoded side by side, the rest one by one: sizes on both
    # sides of a group, each image distinct, so a misplaced or repeated one shows
    group = graph_decode.GROUP
    pngs = list(MNIST_PNGS.values()) + [encode(noise(28, 1)) for _ in range(2 * group)]
    expected = np.stack([pillow_path(png, MNIST) for png in pngs])
    for n in (1, 3, group - 1, group, group + 1, 2 * group + 3):
        got = graph_path(pngs[:n], MNIST)
        assert got.shape == (n, 28, 28, 1)
        np.testing.assert_array_equal(got, expected[:n], err_msg=f"batch of {n}")


GRAY_28 = encode(noise(28, 1))


@pytest.mark.parametrize(
    "png,spec",
    [
        (encode(noise(27, 1)), MNIST),  # not the input size
        (encode(noise(64, 1)), MNIST),
        (encode(noise(28, 3)), MNIST),  # RGB for a gray model
        (encode(Image.fromarray(np.zeros((28, 28), np.uint16) + 300)), MNIST),  # 16-bit
        (encode(noise(28, 1).convert("P")), MNIST),  # palette
        (encode(noise(28, 1).convert("LA")), MNIST),  # alpha
        (encode(noise(32, 3).convert("RGBA")), CIFAR),
        (encode(noise(28, 1), transparency=0), MNIST),  # tRNS chunk
        (with_chunk(GRAY_28, b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00"), MNIST),  # orientation
        (with_chunk(GRAY_28, b"bKGD", b"\x00\x00"), MNIST),  # unknown to the allow-list
        (GRAY_28[:-12], MNIST),  # truncated: no IEND
        (GRAY_28[:-12] + GRAY_28[-12:-8], MNIST),
        (GRAY_28[:8] + b"\x00\x00\x00\x0dIHDX" + GRAY_28[16:], MNIST),  # IHDR not first
        (encode(noise(28, 1), "JPEG"), MNIST),  # not a PNG
        (b"\x89PNG\r\n\x1a\n", MNIST),
        (b"", MNIST),
    ],
)
def test_only_pngs_the_graph_decodes_exactly_are_accepted(png, spec):
    assert not graph_decode.decodable(png, spec)


def test_trailing_bytes_after_iend_are_ignored_by_both_paths():
    png = GRAY_28 + b"junk"
    assert graph_decode.decodable(png, MNIST)
    np.testing.assert_array_equal(graph_path([png], MNIST)[0], pillow_path(png, MNIST))


def test_versions_of_one_input_kind_share_one_png_decoder_traced_once(digit_odd_model, models_dir):
    # TensorFlow warned of "excessive retracing" when every version traced its own decoder
    plus = ServedModel("digit_odd_plus", 1, models_dir / "digit_odd_plus" / "1", "/device:CPU:0")
    plus.load()
    pngs = list(MNIST_PNGS.values())
    for model in (digit_odd_model, plus):
        for n in (1, 2, 5, len(pngs)):
            outputs = model.predict_png(pngs[:n])
            assert outputs["digit"].shape == (n, 10) and outputs["odd"].shape == (n, 1)
    decode = graph_decode.decoder(digit_odd_model.metadata.input)
    assert decode is graph_decode.decoder(plus.metadata.input)
    assert decode.experimental_get_tracing_count() == 1
