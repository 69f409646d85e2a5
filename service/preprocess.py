"""Pure functions from uploaded bytes to a model input array: decode, orient, normalise.

``decode`` turns bytes into an upright PIL image (or a clear error); ``to_model_input`` applies
the preprocessing the model's metadata names: ``resize`` for photo models, ``mnist`` for digit
models (MNIST's own normalisation, so a pen-on-paper photo looks like an MNIST digit).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from service.errors import DecompressionBomb, EmptyImage, InvalidImage, UnsupportedMediaType
from training.metadata import InputSpec

FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "MPO"}
MNIST_BOX, MNIST_SIZE = 20, 28
# digit photos are normalised at this working resolution (longest side): ~9x the 28-pixel input,
# enough for a digit that fills a fifth of the page; bench/photo.py: same accuracy as at 512
WORK_SIDE = 256
PAPER_MEDIAN, PAPER_SIGMA = 7, 4  # lighting estimate, in pixels of a 32-pixel thumbnail
EDGE_BAND = 1 / 64  # of the longest side: left out of the ink map of a photo
REDUCING_GAP = 3  # photo models: decode at least 3x the input size, then antialias down
STROKE_PX = 2.2  # MNIST's typical pen width on the 20x20 box
TO_UNIT = np.float32(1 / 255)  # 8-bit -> [0, 1]; the graph decoder multiplies by the same


def open_image(data: bytes, max_pixels: int, name: str = "image") -> Image.Image:
    """Bytes -> a lazily opened image whose header passed the checks (format, pixel count).

    Cheap: only the header is read, so a decompression bomb is refused before it expands.
    """
    if not data:
        raise EmptyImage(f"{name}: empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise DecompressionBomb(f"{name}: too many pixels to decode") from None
    except Exception as exc:  # Pillow's format plugins raise many types on garbage
        raise InvalidImage(f"{name}: not a decodable image") from exc
    if image.format not in FORMATS:
        raise UnsupportedMediaType(
            f"{name}: {image.format} images are not supported; send PNG, JPEG, GIF, BMP, WebP "
            "or TIFF"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise DecompressionBomb(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,}"
        )
    return image


def load(image: Image.Image, name: str = "image") -> Image.Image:
    """Decode the pixels (first frame of animations) and turn the image upright (EXIF)."""
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not a copy: a full-size image is big
        return image
    except Image.DecompressionBombError:
        raise DecompressionBomb(f"{name}: too many pixels to decode") from None
    except Exception as exc:  # truncated or corrupt data surfaces as many types
        raise InvalidImage(f"{name}: corrupt or truncated image") from exc


def decode(data: bytes, max_pixels: int, name: str = "image") -> Image.Image:
    """Bytes -> upright, fully loaded PIL image, or a clear error."""
    return load(open_image(data, max_pixels, name), name)


def work_size(size: tuple[int, int], spec: InputSpec) -> tuple[int, int]:
    """The fewest pixels of an image of ``size`` that preprocessing for ``spec`` needs."""
    width, height = size
    if spec.preprocessing == "mnist":
        scale = WORK_SIDE / max(width, height)
    else:
        scale = REDUCING_GAP * max(spec.width / width, spec.height / height)
    scale = min(scale, 1.0)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def draft(image: Image.Image, spec: InputSpec) -> Image.Image:
    """Ask the decoder for no more than :func:`work_size`: JPEGs decode at 1/2, 1/4 or 1/8
    scale in the DCT domain (and as grayscale for gray models), so a 12-megapixel photo
    costs the decoder a 1/64 of the work and memory. Changes ``image.size`` before decoding.
    """
    if image.format in ("JPEG", "MPO"):
        gray = spec.preprocessing == "mnist" or spec.color_mode == "grayscale"
        image.draft("L" if gray else image.mode, work_size(image.size, spec))
    return image


def shrink(image: Image.Image, spec: InputSpec) -> Image.Image:
    """A decoded image reduced by an integer factor (a box filter, fast) to no less than
    :func:`work_size`, so the per-pixel work after it runs on few pixels."""
    target = work_size(image.size, spec)
    factor = min(image.width // target[0], image.height // target[1])
    if factor < 2:
        return image
    if image.mode in ("P", "PA", "1"):
        image = image.convert("RGBA" if image.mode != "1" else "L")
    try:
        return image.reduce(factor)  # alpha is premultiplied by Pillow
    except ValueError:  # modes reduce does not support (16-bit): full size it is
        return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer/float grayscale -> 8-bit 'L', scaling rather than clipping."""
    arr = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    if image.mode == "F":
        top = max(float(arr.max(initial=0)), 1.0)
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def flatten(image: Image.Image, background: tuple[int, int, int] | None = None) -> Image.Image:
    """Any mode -> 'L' or 'RGB': palettes, CMYK, 16-bit converted; alpha composited onto a
    background.

    With no background given, transparent areas become whichever of white or black contrasts
    with the visible pixels (dark ink on transparency lands on white paper, light ink on black).
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit(image)
    if image.mode == "P" or image.mode in ("LA", "PA", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode != "RGBA":
        return image.convert("RGB")
    alpha = np.asarray(image.getchannel("A"), np.float32) / 255.0
    if background is None:
        luma = np.asarray(image.convert("L"), np.float32)
        visible = alpha.sum()
        ink = (luma * alpha).sum() / visible if visible else 0.0
        background = (0, 0, 0) if ink > 127 else (255, 255, 255)
    canvas = Image.new("RGB", image.size, background)
    canvas.paste(image.convert("RGB"), mask=image.getchannel("A"))
    return canvas


def resize(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Photo models: colour-convert, antialiased resize to the input size, float32 in [0, 1]."""
    mode = "L" if spec.color_mode == "grayscale" else "RGB"
    image = flatten(image, background=(255, 255, 255)).convert(mode)
    image = image.resize((spec.width, spec.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    arr = np.asarray(image, np.float32) * TO_UNIT
    return arr.reshape(spec.height, spec.width, spec.channels)


def _gray_ink_bright(image: Image.Image, max_side: int) -> np.ndarray:
    """Grayscale in [0, 1] with the ink bright: dark ink on light paper is inverted."""
    gray = flatten(image).convert("L")
    if max(gray.size) > max_side:
        gray.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if 2 * np.count_nonzero(border > 127) > border.size:  # mostly light: dark ink on paper
        pixels = 255 - pixels
    return pixels.astype(np.float32) * TO_UNIT


def _ink(image: Image.Image) -> np.ndarray:
    """Ink map in [0, 1] (ink bright), polarity detected, uneven lighting removed.

    A thin band along the photo's edges is left out, where the lighting estimate is least
    sure (half a cell of its 32-pixel thumbnail).
    """
    arr = _gray_ink_bright(image, WORK_SIDE)
    ink = np.clip(arr - _paper(arr), 0.0, None)
    band = max(1, round(EDGE_BAND * max(ink.shape)))
    if min(ink.shape) > 4 * band:
        ink[:band], ink[-band:], ink[:, :band], ink[:, -band:] = 0, 0, 0, 0
    return ink


def _paper(arr: np.ndarray) -> np.ndarray:
    """The slowly varying background (uneven lighting), from a 32-pixel thumbnail.

    A median filter drops the ink from the thumbnail, and point reflection past its edges
    continues a lighting gradient straight on before the blur. (The earlier estimate, a plain
    blur capped near the median, turned strong gradients into ink: bench/photo.py read 290 of
    300 photos right with it, 296-298 with this.)
    """
    height, width = arr.shape
    image = Image.fromarray(arr, "F")
    small = np.asarray(
        image.resize(
            (max(1, width * 32 // max(arr.shape)), max(1, height * 32 // max(arr.shape))),
            Image.Resampling.BOX,
        )
    )
    small = ndimage.median_filter(small, size=PAPER_MEDIAN, mode="reflect")
    pad = min(2 * PAPER_SIGMA, *(n - 1 for n in small.shape))
    if pad > 0:
        small = np.pad(small, pad, mode="reflect", reflect_type="odd")
    blurred = ndimage.gaussian_filter(small, sigma=PAPER_SIGMA, mode="nearest")
    if pad > 0:
        blurred = np.ascontiguousarray(blurred[pad:-pad, pad:-pad])
    return np.asarray(
        Image.fromarray(blurred, "F").resize((width, height), Image.Resampling.BILINEAR)
    )


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold: the level that best separates ink from paper."""
    top = float(values.max()) or 1.0
    hist = np.bincount(
        np.minimum((values * ((bins - 1) / top)).astype(np.intp), bins - 1).ravel(), minlength=bins
    )
    centers = (np.arange(bins) + 0.5) * (top / bins)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centers)
    total, total_mean = weight[-1], mean[-1]
    between = (total_mean * weight - mean * total) ** 2 / np.maximum(
        weight * (total - weight), 1e-12
    )
    return float(centers[np.argmax(between)])


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion by slicing (much cheaper than a generic morphology call)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """4-neighbour binary dilation, ``steps`` times."""
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def _digit_mask(ink: np.ndarray) -> np.ndarray:
    """Pixels of the digit: above Otsu's threshold, in components big enough to be strokes."""
    mask = ink > max(_otsu(ink), 0.15 * float(ink.max()))
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
        keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
        mask = np.isin(labels, keep)
    return mask


def _thicken(ink: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """Dilate thin pen strokes so that after scaling they are as wide as MNIST's."""
    area = float(mask.sum())
    edge = float((mask & ~_erode(mask)).sum())
    width = 2.0 * area / max(edge, 1.0)  # area / (perimeter / 2) for a long thin stroke
    grow = round((STROKE_PX / scale - width) / 2)
    if grow < 1:
        return ink
    return ndimage.grey_dilation(ink, size=(2 * grow + 1, 2 * grow + 1))


def to_mnist(image: Image.Image) -> np.ndarray:
    """MNIST's normalisation: the ink cropped, fitted in 20x20 keeping aspect ratio, and
    centred by centre of mass in 28x28; float32 [28, 28, 1] in [0, 1], ink bright.

    An upload that already is 28x28 is taken as MNIST-format data (only grayscale and
    polarity are applied): re-cropping a normalised digit would only blur it.
    """
    if image.size == (MNIST_SIZE, MNIST_SIZE):
        return _gray_ink_bright(image, MNIST_SIZE)[..., None]
    ink = _ink(image)
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    if float(ink.max()) < 0.05:  # a blank page: nothing to centre
        return out[..., None]
    mask = _digit_mask(ink)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    scale = MNIST_BOX / max(bottom - top, right - left)
    ink = _thicken(np.where(_grow(mask, 2), ink, 0.0), mask, scale)
    crop = ink[top:bottom, left:right]
    crop = crop / max(float(np.percentile(crop[crop > 0], 90)), 1e-6)  # strokes reach full ink
    h = max(1, round((bottom - top) * scale))
    w = max(1, round((right - left) * scale))
    small = np.asarray(
        Image.fromarray(np.clip(crop, 0, 1).astype(np.float32), "F").resize(
            (w, h), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    )
    small = np.clip(small, 0.0, 1.0)
    cy, cx = ndimage.center_of_mass(small) if small.sum() > 0 else (h / 2, w / 2)
    y0 = int(np.clip(round(MNIST_SIZE / 2 - cy), 0, MNIST_SIZE - h))
    x0 = int(np.clip(round(MNIST_SIZE / 2 - cx), 0, MNIST_SIZE - w))
    out[y0 : y0 + h, x0 : x0 + w] = small
    return out[..., None]


def to_model_input(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """The preprocessing named in the model's metadata, one image -> [H, W, C] float32 in the
    model's value range."""
    unit = to_mnist(image) if spec.preprocessing == "mnist" else resize(image, spec)
    return to_value_range(unit, spec)


def value_scale(spec: InputSpec) -> tuple[float, float] | None:
    """(scale, offset) taking [0, 1] (black..white) to the model's value range, or None for a
    model that takes [0, 1]. :mod:`service.graph_decode` applies the same in its graph."""
    low, high = spec.value_range
    return None if (low, high) == (0.0, 1.0) else (high - low, low)


def to_value_range(unit: np.ndarray, spec: InputSpec) -> np.ndarray:
    scale = value_scale(spec)
    return unit if scale is None else unit * np.float32(scale[0]) + np.float32(scale[1])


def to_unit_range(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The inverse of :func:`to_value_range` (to draw the model's input as a picture)."""
    scale = value_scale(spec)
    return pixels if scale is None else (pixels - np.float32(scale[1])) / np.float32(scale[0])


def finish(image: Image.Image, spec: InputSpec, name: str = "image") -> np.ndarray:
    """An opened (and drafted) image -> the model's input [H, W, C] float32: decode, reduce,
    orient, normalise."""
    image = shrink(load(image, name), spec)
    try:
        return to_model_input(image, spec)
    except (ValueError, OSError) as exc:  # e.g. a colour mode Pillow cannot convert
        raise InvalidImage(f"{name}: cannot prepare this image for the model") from exc


def prepare(data: bytes, spec: InputSpec, max_pixels: int, name: str = "image") -> np.ndarray:
    """Uploaded bytes -> the model's input [H, W, C] float32 (what the service does to each
    upload, in one call)."""
    return finish(draft(open_image(data, max_pixels, name), spec), spec, name)


def prepare_all(files: list[tuple[str, bytes]], spec: InputSpec, max_pixels: int) -> np.ndarray:
    """(name, bytes) of each upload -> one batch [n, H, W, C] (a decode worker's task)."""
    arrays = [prepare(data, spec, max_pixels, name) for name, data in files]
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
