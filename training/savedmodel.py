"""Metadata for a SavedModel that came without ``metadata.json`` (TF Serving's habit; Triton's
auto-complete): read off its ``serving_default`` signature.

The input is the signature's one input, an image batch [batch, H, W, 1|3] of float32 (values
in [0, 1]) or uint8 (0..255); each output [batch, units] is a head, of the kind ``heads.json``
beside it declares (:mod:`training.heads`), else ``raw`` values: a signature does not say
whether its numbers are probabilities. Labels come from ``labels.txt`` beside it (a model with
one head) or ``labels-<output>.txt`` per head, else the indices. Such a version has no layer table,
feature maps or Grad-CAM: those need the Keras model (``cnn-serve import``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from training.heads import HEADS_FILE, kind_of, label_count, read_heads_file
from training.metadata import InputSpec, ModelMetadata, OutputSpec, read_labels

INPUT_TYPES = {"float32": (0.0, 1.0), "uint8": (0.0, 255.0)}


class NotAnImageModel(ValueError):
    """The signature is not that of an image classifier this service can serve."""


def _shape(spec) -> list[int | None]:
    return [None if d is None else int(d) for d in spec.shape]


def _labels(directory: Path, head: str, wanted: int, only_head: bool) -> list[str]:
    for name in [f"labels-{head}.txt"] + (["labels.txt"] if only_head else []):
        path = directory / name
        if path.is_file():
            try:
                labels = [label for label in read_labels(path) if label]
            except ValueError as exc:
                raise NotAnImageModel(str(exc)) from None
            if len(labels) != wanted:
                raise NotAnImageModel(
                    f"{name} has {len(labels)} labels; head {head!r} has {wanted}"
                )
            return labels
    return [str(i) for i in range(wanted)]


def metadata(name: str, version: int, directory: Path, signature) -> ModelMetadata:
    """What the service needs to know of a version, from its serving signature."""
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise NotAnImageModel(f"serving_default takes {len(inputs)} inputs, not one image")
    ((input_name, spec),) = inputs.items()
    shape = _shape(spec)
    if (
        len(shape) != 4
        or shape[3] not in (1, 3)
        or None in shape[1:]
        or spec.dtype.name not in INPUT_TYPES
    ):
        raise NotAnImageModel(
            f"input {input_name!r} is {spec.dtype.name} {shape}, not an "
            "image batch [batch, H, W, 1|3] of float32 or uint8"
        )
    outputs = signature.structured_outputs
    try:
        declared = read_heads_file(directory)
    except ValueError as exc:
        raise NotAnImageModel(str(exc)) from None
    unknown = sorted(set(declared) - set(outputs))
    if unknown:
        raise NotAnImageModel(f"{HEADS_FILE} names {unknown}; the outputs are {list(outputs)}")
    heads = []
    for head, out in outputs.items():
        out_shape = _shape(out)
        if len(out_shape) != 2 or out_shape[1] is None:
            raise NotAnImageModel(f"output {head!r} is {out_shape}, not [batch, values]")
        try:
            kind = kind_of(head, out_shape[1], "", declared.get(head, "raw"))
        except ValueError as exc:
            raise NotAnImageModel(f"{HEADS_FILE}: {exc}") from None
        wanted = label_count(kind, out_shape[1])
        heads.append(
            OutputSpec(
                name=head, kind=kind, labels=_labels(directory, head, wanted, len(outputs) == 1)
            )
        )
    height, width, channels = shape[1:]
    return ModelMetadata(
        name=name,
        version=version,
        architecture="SavedModel",
        description="a SavedModel without metadata.json: inputs and outputs read off its "
        "serving_default signature",
        input=InputSpec(
            name=input_name,
            shape=[height, width, channels],
            dtype=spec.dtype.name,
            value_range=INPUT_TYPES[spec.dtype.name],
            color_mode="grayscale" if channels == 1 else "rgb",
            preprocessing="resize",
        ),
        outputs=heads,
        layers=[],
        total_params=0,
        trainable_params=0,
        signatures=["serving_default"],
        tensorflow_version="unknown",
        keras_version="unknown",
        created_at=dt.datetime.fromtimestamp(directory.stat().st_mtime, dt.UTC)
        .replace(microsecond=0)
        .isoformat(),
    )
