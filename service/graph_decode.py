"""PNG uploads already in the model's input format, decoded and normalised inside the
TensorFlow graph, for a whole batch in one call and without the GIL.

Under load, decoding with Pillow on the event loop was the largest cost of a request (about a
third of the loop's time at 32 concurrent clients, py-spy). A PNG of exactly the model's input
size, 8-bit gray (or RGB for colour models), with no transparency, orientation or palette,
needs nothing of :mod:`service.preprocess` beyond what a few graph ops do exactly, so such
uploads go to the model as bytes. Everything else takes the Pillow path. Both paths give the
same input, bit for bit (tests compare them); a PNG the graph can't decode falls back to
Pillow, which names the problem.
"""

from __future__ import annotations

import functools
import struct

import tensorflow as tf

from service.preprocess import TO_UNIT, value_scale
from training.metadata import InputSpec

SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAY, RGB = 0, 2  # PNG colour types
GROUP = 64  # PNGs decoded by one step of the graph's loop
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


def decodable(data: bytes, spec: InputSpec) -> bool:
    """Whether ``data`` is a complete PNG the graph turns into exactly the model's input.

    Reads only the chunk headers: a few microseconds, no decompression.
    """
    if not data.startswith(SIGNATURE) or len(data) < 45:
        return False
    length, kind, width, height, depth, colour = struct.unpack_from(">I4sIIBB", data, 8)
    colours = (
        (GRAY,) if spec.color_mode == "grayscale" or spec.preprocessing == "mnist" else (GRAY, RGB)
    )
    if (
        kind != b"IHDR"
        or length != 13
        or (width, height) != (spec.width, spec.height)
        or depth != 8
        or colour not in colours
    ):
        return False
    pos = 33  # after the signature and IHDR
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        if kind not in NEUTRAL_CHUNKS or pos > len(data):
            return False
        if kind == b"IEND":
            return True
    return False  # truncated: no IEND


def decoder(spec: InputSpec) -> tf.types.experimental.PolymorphicFunction:
    """A graph function: PNG bytes [n] -> float32 [n, H, W, C], as :mod:`service.preprocess`
    makes it for :func:`decodable` images. One per kind of input, shared by every version
    that takes it."""
    return _decoder(
        (spec.height, spec.width, spec.channels), spec.preprocessing == "mnist", value_scale(spec)
    )


@functools.cache
def _decoder(
    shape: tuple[int, int, int], mnist: bool, scale: tuple[float, float] | None
) -> tf.types.experimental.PolymorphicFunction:
    """``scale`` maps [0, 1] to the model's value range, as preprocess does."""

    def one(png: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.io.decode_png(png, channels=shape[2]), shape)

    def group(pngs: tf.Tensor) -> tf.Tensor:
        return tf.stack([one(png) for png in tf.unstack(pngs, num=GROUP)])

    def each(pngs: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            one,
            pngs,
            fn_output_signature=tf.TensorSpec(shape, tf.uint8),
            parallel_iterations=GROUP,
        )

    def grouped(pngs: tf.Tensor) -> tf.Tensor:
        whole = tf.shape(pngs)[0] // GROUP * GROUP
        groups = tf.map_fn(
            group,
            tf.reshape(pngs[:whole], [-1, GROUP]),
            fn_output_signature=tf.TensorSpec((GROUP, *shape), tf.uint8),
        )
        return tf.concat([tf.reshape(groups, [-1, *shape]), each(pngs[whole:])], axis=0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(pngs: tf.Tensor) -> tf.Tensor:
        # whole groups as GROUP decode ops side by side, the rest (< GROUP) a loop step
        # each: a loop step costs about what a 28x28 decode does (1,024 28x28 PNGs, one
        # inter-op thread: 19.5 -> 14.7 us of CPU per PNG); a small batch skips the groups'
        # loop, which would add ~100 us to it
        pixels = tf.cond(tf.shape(pngs)[0] >= GROUP, lambda: grouped(pngs), lambda: each(pngs))
        if mnist:  # polarity: dark ink on a mostly light border flips
            border = tf.concat(
                [pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]], axis=1
            )
            light = tf.math.count_nonzero(border > 127, axis=[1, 2]) * 2 > tf.size(
                border[0], tf.int64
            )
            pixels = tf.where(light[:, None, None, None], 255 - pixels, pixels)
        unit = tf.cast(pixels, tf.float32) * tf.constant(TO_UNIT)
        return unit if scale is None else unit * scale[0] + scale[1]

    return decode


def serving(spec: InputSpec, serve, to_input) -> tf.types.experimental.ConcreteFunction:
    """``serve`` (a SavedModel signature taking ``spec.name``) fed by :func:`decoder` through
    ``to_input`` (float32 pixels -> the input's type): one graph call per batch of PNGs,
    traced once, here, for any batch size."""
    decode = decoder(spec)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_png(pngs: tf.Tensor) -> dict[str, tf.Tensor]:
        return serve(**{spec.name: to_input(decode(pngs), spec)})

    # concrete: a graph per version is the design, not the accidental retracing TensorFlow
    # warns about when many functions share one Python body
    return serve_png.get_concrete_function()
