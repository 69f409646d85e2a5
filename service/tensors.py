"""Tensors and numbers as clients send them in JSON and in headers, read strictly: what is
not a number, or a length in plain ASCII digits, is a 400 here, never an exception further
in. (Whether the numbers fit the model is :mod:`service.model_input`'s to say.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import BadRequest

MAX_LENGTH_DIGITS = 18  # a header length beyond this is no body this service reads


def header_length(value: str | bytes | None) -> int | None:
    """A length header (``Content-Length``, ``Inference-Header-Content-Length``): ASCII
    digits only (``str.isdigit`` also takes ``²`` and ``٣``), at most 18 of them; else None."""
    if value is None or not value or len(value) > MAX_LENGTH_DIGITS:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return int(text) if text.isascii() and text.isdigit() else None


def json_floats(data: Any, what: str, may_hold_booleans: bool) -> np.ndarray:
    """Nested lists of JSON numbers -> a float32 array; 400 for anything else: strings (even
    numeric ones), booleans, null, objects, ragged lists, integers beyond float range.

    NumPy's own conversion takes ``"0.5"`` and ``true`` as numbers and raises OverflowError
    on a 400-digit integer, so the shape and kinds are inferred first. A boolean among
    numbers leaves no trace in the inferred type (``[true, 2]`` is int64): the caller says
    whether the body may hold one (``true``/``false`` appear in its text), and only then is
    every value looked at.
    """
    try:
        inferred = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(f"{what} is not a tensor: lists of one shape, of numbers") from None
    if inferred.dtype.kind not in "iuf" or (may_hold_booleans and _any_boolean(inferred, data)):
        raise BadRequest(
            f"{what} holds values that are not numbers (strings, booleans, null, "
            "objects or integers too large for float32)"
        )
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: of_pixels refuses it
        return inferred.astype(np.float32, copy=False)


def may_hold_booleans(json_text: bytes) -> bool:
    """Whether a JSON text can hold ``true`` or ``false`` (a scan at memchr speed)."""
    return b"true" in json_text or b"false" in json_text


def _any_boolean(inferred: np.ndarray, data: Any) -> bool:
    leaves = np.asarray(data, dtype=object).reshape(-1) if inferred.ndim else [data]
    return any(type(leaf) is bool for leaf in leaves)
