"""PNGs and JPEGs decoded in the TensorFlow graph give exactly what the Pillow path gives,
and only images the graph can decode exactly are sent there."""

import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
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


def graph_path(images: list[bytes], spec: InputSpec) -> np.ndarray:
    assert graph_decode.batch_format(images, spec) is not None
    return graph_decode.decoder(spec)(tf.constant(images))["pixels"].numpy()


def jpeg(image: Image.Image, **options) -> bytes:
    return encode(image, "JPEG", **options)


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
PHOTO = Image.fromarray(
    np.clip(np.linspace(0, 255, 32)[None, :, None] + RNG.normal(0, 30, (32, 32, 3)), 0, 255).astype(
        np.uint8
    )
)
CIFAR_JPEGS = {
    "4:2:0": jpeg(PHOTO),
    "4:4:4, quality 95": jpeg(PHOTO, subsampling=0, quality=95),
    "4:2:2, quality 40": jpeg(PHOTO, subsampling=1, quality=40),
    "progressive": jpeg(PHOTO, progressive=True),
    "optimized, restart markers": jpeg(PHOTO, optimize=True, restart_marker_blocks=1),
    "gray": jpeg(PHOTO.convert("L")),
    "noise": jpeg(noise(32, 3)),
    "with ICC profile and comment": jpeg(PHOTO, icc_profile=b"\0" * 128, comment=b"a camera"),
}
MNIST_JPEGS = {
    "pen digit": jpeg(draw_digit(4, canvas=(28, 28), box=(6, 4, 20))),
    "MNIST style": jpeg(
        Image.fromarray(255 - np.asarray(draw_digit(9, canvas=(28, 28), box=(6, 4, 20))))
    ),
    "progressive noise": jpeg(noise(28, 1), progressive=True),
}


@pytest.mark.parametrize(
    "spec,pngs",
    [
        (MNIST, MNIST_PNGS),
        (CIFAR, CIFAR_PNGS),
        (GRAY_RESIZE, {"gray": encode(noise(32, 1))}),
        (CIFAR, CIFAR_JPEGS),
        (MNIST, MNIST_JPEGS),
        (GRAY_RESIZE, {"gray": jpeg(noise(32, 1))}),
    ],
    ids=["mnist", "rgb resize", "gray resize", "jpeg rgb", "jpeg mnist", "jpeg gray"],
)
def test_graph_and_pillow_give_the_same_input_bit_for_bit(spec, pngs):
    fmt = graph_decode.PNG if next(iter(pngs.values())).startswith(b"\x89") else graph_decode.JPEG
    assert all(graph_decode.image_format(png, spec) == fmt for png in pngs.values())
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
JPEG_32 = jpeg(noise(32, 3))
ROTATED = Image.Exif()
ROTATED[0x0112] = 6  # orientation: rotate 90
XMP_ROTATED = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'


def text_chunk(keyword: str, text: bytes) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(keyword, text.decode())
    return info


def with_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """A JPEG with one more segment right after its start marker."""
    return (
        data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    )


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
        (encode(noise(28, 1), "BMP"), MNIST),  # neither PNG nor JPEG
        (b"\x89PNG\r\n\x1a\n", MNIST),
        (b"", MNIST),
        (jpeg(noise(27, 1)), MNIST),  # a JPEG not of the input size
        (jpeg(noise(28, 3)), MNIST),  # colour for a gray model
        (jpeg(noise(32, 3).convert("CMYK")), CIFAR),
        (jpeg(noise(32, 3), exif=ROTATED.tobytes()), CIFAR),  # orientation
        (with_segment(JPEG_32, 0xE1, b"http://ns.adobe.com/xap/1.0/\0" + XMP_ROTATED), CIFAR),
        (encode(noise(28, 1), pnginfo=text_chunk("XML:com.adobe.xmp", XMP_ROTATED)), MNIST),
        (encode(noise(28, 1), pnginfo=text_chunk("Raw profile type exif", b"exif")), MNIST),
        (JPEG_32[:-2], CIFAR),  # truncated: no end marker
        (JPEG_32 + b"junk", CIFAR),
        (JPEG_32[:2] + JPEG_32[2:].replace(b"\xff\xc0", b"\xff\xc3", 1), CIFAR),  # lossless
        (with_segment(JPEG_32, 0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01"), CIFAR),
        (b"\xff\xd8\xff\xd9", CIFAR),  # no frame
    ],
)
def test_only_images_the_graph_decodes_exactly_are_accepted(png, spec):
    assert graph_decode.image_format(png, spec) is None


def test_trailing_bytes_after_iend_are_ignored_by_both_paths():
    png = GRAY_28 + b"junk"
    assert graph_decode.image_format(png, MNIST) == graph_decode.PNG
    np.testing.assert_array_equal(graph_path([png], MNIST)[0], pillow_path(png, MNIST))


def test_versions_of_one_input_kind_share_one_decoder(digit_odd_model, models_dir):
    # TensorFlow warned of "excessive retracing" when every version traced its own decoder,
    # and optimised it again inside each version's graph
    plus = ServedModel("digit_odd_plus", 1, models_dir / "digit_odd_plus" / "1", "/device:CPU:0")
    plus.load()
    pngs = list(MNIST_PNGS.values())
    for model in (digit_odd_model, plus):
        for n in (1, 2, 5, len(pngs)):
            outputs = model.predict_encoded(pngs[:n])
            assert outputs["digit"].shape == (n, 10) and outputs["odd"].shape == (n, 1)
    decode = graph_decode.decoder(digit_odd_model.metadata.input)
    assert decode is graph_decode.decoder(plus.metadata.input)
    assert decode is not graph_decode.decoder(CIFAR)
