"""PNG and JPEG uploads already in the model's input format, decoded and normalised by
TensorFlow, a whole batch in one graph call and without the GIL.

Under load, decoding with Pillow on the event loop was the largest cost of a request (about a
third of the loop's time at 32 concurrent clients, py-spy). An image of exactly the model's
input size, 8-bit gray (or RGB for colour models), with no transparency, orientation or
palette, needs nothing of :mod:`service.preprocess` beyond what a few graph ops do exactly, so
such uploads go to the model as bytes: PNGs, and JPEGs (a 32x32 CIFAR JPEG: ~130 us of
Pillow and NumPy in a decode worker, ~25 us in the graph, decoded with libjpeg's accurate
integer IDCT, as Pillow does). Everything else takes the Pillow path. Both paths give the same
input, bit for bit (tests compare them); an image the graph can't decode falls back to
Pillow, which names the problem.
"""

from __future__ import annotations

import functools
import struct

import tensorflow as tf

from service.preprocess import TO_UNIT, value_scale
from training.metadata import InputSpec

PNG, JPEG = "png", "jpeg"  # the formats the graph decodes
SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAY, RGB = 0, 2  # PNG colour types
GROUP = 64  # images decoded by one step of the graph's loop
# JPEG frames Pillow and TensorFlow decode alike with libjpeg: baseline, extended, progressive
# (8-bit); lossless, arithmetic-coded and hierarchical ones take the Pillow path
JPEG_FRAMES = {0xC0, 0xC1, 0xC2}
OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# chunks that change no pixel as Pillow decodes them (it applies neither gamma nor ICC);
# anything else (tRNS, eXIf, PLTE, bKGD, ...) sends the image down the Pillow path
NEUTRAL_CHUNKS = {
    b"IDAT",
    b"IEND",
    b"tEXt",
    b"zTXt",
    b"iTXt",
    b"tIME",
    b"pHYs",
    b"gAMA",
    b"cHRM",
    b"sRGB",
    b"iCCP",
    b"sBIT",
}
# text chunks from which Pillow reads an orientation (EXIF, or XMP's tiff:Orientation) and
# turns the image
ORIENTING_TEXT = {b"XML:com.adobe.xmp", b"Raw profile type exif"}


def image_format(data: bytes, spec: InputSpec) -> str | None:
    """``PNG`` or ``JPEG`` when ``data`` is an image the graph turns into exactly the model's
    input, else None. Reads only the headers: a few microseconds, no decompression."""
    if data.startswith(SIGNATURE):
        return PNG if _png(data, spec) else None
    if data.startswith(b"\xff\xd8"):
        return JPEG if _jpeg(data, spec) else None
    return None


def batch_format(images: list[bytes], spec: InputSpec) -> str | None:
    """The format all of ``images`` share, when the graph decodes every one of them."""
    first = image_format(images[0], spec) if images else None
    if first is None or any(image_format(data, spec) != first for data in images[1:]):
        return None
    return first


def _gray_only(spec: InputSpec) -> bool:
    return spec.color_mode == "grayscale" or spec.preprocessing == "mnist"


def _png(data: bytes, spec: InputSpec) -> bool:
    if len(data) < 45:
        return False
    length, kind, width, height, depth, colour = struct.unpack_from(">I4sIIBB", data, 8)
    if (
        kind != b"IHDR"
        or length != 13
        or (width, height) != (spec.width, spec.height)
        or depth != 8
        or colour not in ((GRAY,) if _gray_only(spec) else (GRAY, RGB))
    ):
        return False
    pos = 33  # after the signature and IHDR
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        keyword = data[pos + 8 : pos + 8 + min(length, 80)].split(b"\0", 1)[0]
        pos += 12 + length
        if kind not in NEUTRAL_CHUNKS or pos > len(data) or keyword in ORIENTING_TEXT:
            return False
        if kind == b"IEND":
            return True
    return False  # truncated: no IEND


def _jpeg(data: bytes, spec: InputSpec) -> bool:
    """A complete 8-bit JPEG of the input size, gray (or YCbCr for colour models), without
    APP1 (EXIF or XMP, where Pillow finds an orientation) or Adobe (colour transform)
    segments, whose frame libjpeg decodes the same way for both paths."""
    if not data.endswith(b"\xff\xd9"):
        return False  # truncated, or bytes after the end: Pillow's to judge
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if marker in JPEG_FRAMES:
            if len(segment) < 6:
                return False
            depth, height, width, components = struct.unpack_from(">BHHB", segment)
            return (
                depth == 8
                and (width, height) == (spec.width, spec.height)
                and components in ((1,) if _gray_only(spec) else (1, 3))
            )
        if (
            marker in OTHER_FRAMES
            or marker == 0xDA  # scan data before a frame header
            or marker == 0xE1
            or (marker == 0xEE and segment.startswith(b"Adobe"))
        ):
            return False
        pos += 2 + length
    return False


def decoder(spec: InputSpec) -> tf.types.experimental.ConcreteFunction:
    """A graph function: images [n] of one format, PNG or JPEG -> ``{"pixels": float32 [n,
    H, W, C]}``, as :mod:`service.preprocess` makes them for images :func:`image_format`
    accepted. One per kind of input, traced and optimised once, shared by every version that
    takes it: a call of its own, then the version's model (inside each version's graph it was
    optimised again for each version: 5.2 s to load the six bundled versions, 3.9 s shared)."""
    return _decoder(
        (spec.height, spec.width, spec.channels), spec.preprocessing == "mnist", value_scale(spec)
    )


@functools.cache
def _decoder(
    shape: tuple[int, int, int], mnist: bool, scale: tuple[float, float] | None
) -> tf.types.experimental.ConcreteFunction:
    """``scale`` maps [0, 1] to the model's value range, as preprocess does."""

    def pixels(images: tf.Tensor, fmt: str) -> tf.Tensor:
        # whole groups as GROUP decode ops side by side, the rest (< GROUP) a loop step
        # each: a loop step costs about what a 28x28 decode does (1,024 28x28 PNGs, one
        # inter-op thread: 19.5 -> 14.7 us of CPU per PNG); a small batch skips the groups'
        # loop, which would add ~100 us to it
        def one(image: tf.Tensor) -> tf.Tensor:
            if fmt == JPEG:  # with Pillow's IDCT (libjpeg's default, JDCT_ISLOW)
                decoded = tf.io.decode_jpeg(image, channels=shape[2], dct_method="INTEGER_ACCURATE")
            else:
                decoded = tf.io.decode_png(image, channels=shape[2])
            return tf.ensure_shape(decoded, shape)

        def each(images: tf.Tensor) -> tf.Tensor:
            signature = tf.TensorSpec(shape, tf.uint8)
            return tf.map_fn(one, images, fn_output_signature=signature, parallel_iterations=GROUP)

        def grouped() -> tf.Tensor:
            whole = tf.shape(images)[0] // GROUP * GROUP
            groups = tf.map_fn(
                lambda row: tf.stack([one(image) for image in tf.unstack(row, num=GROUP)]),
                tf.reshape(images[:whole], [-1, GROUP]),
                fn_output_signature=tf.TensorSpec((GROUP, *shape), tf.uint8),
            )
            return tf.concat([tf.reshape(groups, [-1, *shape]), each(images[whole:])], axis=0)

        return tf.cond(tf.shape(images)[0] >= GROUP, grouped, lambda: each(images))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # one format a batch (batch_format): the first image's says which
        is_jpeg = tf.strings.substr(images[0], 0, 2) == b"\xff\xd8"
        decoded = tf.cond(is_jpeg, lambda: pixels(images, JPEG), lambda: pixels(images, PNG))
        if mnist:  # polarity: dark ink on a mostly light border flips
            border = tf.concat(
                [decoded[:, 0], decoded[:, -1], decoded[:, :, 0], decoded[:, :, -1]], axis=1
            )
            light = tf.math.count_nonzero(border > 127, axis=[1, 2]) * 2 > tf.size(
                border[0], tf.int64
            )
            decoded = tf.where(light[:, None, None, None], 255 - decoded, decoded)
        unit = tf.cast(decoded, tf.float32) * tf.constant(TO_UNIT)
        return {"pixels": unit if scale is None else unit * scale[0] + scale[1]}

    return decode.get_concrete_function()
