"""The model input every front door makes of a request, checked here and only here.

Codecs translate: the multipart form (:mod:`service.uploads`), the Open Inference Protocol
(:mod:`service.oip`) and TF Serving's JSON (:mod:`service.tfserving`) turn their wire format
into a pixel tensor or image files and hand them to :func:`of_pixels` or :func:`of_files`.
What a model takes is decided here, the same for every API: how many images, the pixel
tensor's shape, type and finiteness, the declared type of each file. Files are then decoded
within the pixel limits and the decoding budget by :func:`service.inference.to_batch`, the one
preprocessing every API gives a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import BadRequest, InvalidParameter, UnsupportedMediaType, clip, shorten
from service.uploads import ACCEPTED_TYPES, Upload
from training.metadata import InputSpec


@dataclass(frozen=True, slots=True)
class ModelInput:
    """Either pixels [n, H, W, C] float32, finite, in the model's shape, or n image files of
    image types; 1 <= n <= the per-request limit."""

    pixels: np.ndarray | None = None
    files: list[Upload] | None = None

    def __len__(self) -> int:
        if self.files is not None:
            return len(self.files)
        assert self.pixels is not None
        return len(self.pixels)


def of_pixels(pixels: np.ndarray, spec: InputSpec, limit: int, what: str) -> ModelInput:
    """``pixels`` as the model's input, or a 400 that says what is wrong with them."""
    check_shape(list(pixels.shape), spec, limit, what)
    if pixels.dtype != np.float32:
        raise BadRequest(f"{what} is {pixels.dtype}; input {spec.name!r} takes float32")
    if not np.isfinite(pixels).all():
        raise BadRequest(f"{what} holds NaN or infinite values, or numbers out of float32's range")
    return ModelInput(pixels=pixels)


def check_shape(shape: list[int], spec: InputSpec, limit: int, what: str) -> None:
    """A pixel tensor's declared shape against the model's input, before anything of that
    size is allocated (a few bytes on the wire may declare gigabytes)."""
    _count(shape[0] if shape else 0, limit)
    if tuple(shape[1:]) != tuple(spec.shape):
        raise BadRequest(
            f"{what} has shape {clip(shape)}; input {spec.name!r} "
            f"takes [n, {', '.join(map(str, spec.shape))}]"
        )


def of_files(files: list[Upload], limit: int) -> ModelInput:
    """``files`` as images to decode; 422 for too many, 415 for a part that is no image."""
    _count(len(files), limit)
    for upload in files:
        declared = upload.content_type.split(";")[0].strip()
        if not declared.startswith(ACCEPTED_TYPES):
            raise UnsupportedMediaType(
                f"{shorten(upload.filename or 'file')}: {clip(declared)} is not an image type; "
                "send PNG, JPEG, GIF, BMP, WebP or TIFF"
            )
    return ModelInput(files=files)


def _count(n: int, limit: int) -> None:
    if not 1 <= n <= limit:
        raise InvalidParameter(f"{n} images in one request; send 1 to {limit}")
