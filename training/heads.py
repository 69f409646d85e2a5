"""What each head of a model gives: declared by its owner, or read off the graph - never
guessed from its width.

A Keras head's kind comes from its final activation, found by walking back from the layer that
makes it through layers that pass values on unchanged (``Flatten``, ``Dropout``, a linear
``Activation``...): softmax is ``multiclass``, one sigmoid unit ``binary``, several
``multilabel``. Anything else - a linear ``Dense`` (logits? a regression?), a ReLU - is refused
unless declared (``cnn-serve import --head HEAD=KIND``). A drop-in SavedModel has no graph to
read: ``heads.json`` beside it declares its kinds (``{"<output>": "<kind>"}``), and an output
it does not name is served as ``raw`` values, never as probabilities. Neither TensorFlow nor
Keras is imported here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import TypeAdapter, ValidationError

from training.metadata import HeadKind

KINDS: tuple[str, ...] = get_args(HeadKind)
HEADS_FILE = "heads.json"
MAX_HEADS_FILE_BYTES = 64 * 2**10
# layers that give their input's values on, so the activation before them is the head's
PASS_THROUGH = {
    "Flatten",
    "Reshape",
    "Dropout",
    "SpatialDropout1D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
}
_DECLARED = TypeAdapter(dict[str, HeadKind])
T = TypeVar("T")


def final_activation(graph: Any, head: str) -> str:
    """The activation that ends head ``head`` of an expanded graph (:mod:`training.graph`):
    an activation's name (``softmax``, ``sigmoid``, ``linear``, ``relu``...), or the type of
    the layer that makes it when that is not an activation (``Add``)."""
    name = graph.head_layer(head)
    while True:
        layer = graph.layers[name]
        activation = _activation(layer)
        parents = graph.inbound[name]
        if activation is not None or len(parents) != 1:
            return activation or type(layer).__name__
        name = parents[0]


def _activation(layer: Any) -> str | None:
    """The activation ``layer`` applies last (None: it passes its input's values on)."""
    kind = type(layer).__name__
    if kind == "Softmax":
        return "softmax"
    if kind in PASS_THROUGH:
        return None
    if hasattr(layer, "activation") and callable(layer.activation):
        name = getattr(layer.activation, "__name__", type(layer.activation).__name__)
        return None if kind == "Activation" and name == "linear" else name
    if kind in ("ReLU", "LeakyReLU", "ELU", "PReLU"):
        return kind.lower()
    return kind


def kind_of(head: str, units: int, activation: str, declared: str | None) -> HeadKind:
    """The head's kind: ``declared``, else from its final activation; :class:`ValueError`
    in one line when it cannot be known or does not fit the head's width."""
    if declared is None:
        if activation == "softmax":
            declared = "multiclass"
        elif activation == "sigmoid":
            declared = "binary" if units == 1 else "multilabel"
        else:
            raise ValueError(
                f"head {head!r} ends in {activation}, not softmax or sigmoid: say what its "
                f"values are with --head {head}=logits|regression"
            )
    if declared not in KINDS:
        raise ValueError(f"--head {head}={declared}: the kinds are {', '.join(KINDS)}")
    if declared == "binary" and units != 1:
        raise ValueError(f"head {head!r} has {units} units; a binary head has one (sigmoid)")
    if declared in ("multiclass", "logits") and units < 2:
        raise ValueError(f"head {head!r} has one unit; a {declared} head scores two or more")
    return declared  # type: ignore[return-value]  # checked against KINDS above


def label_count(kind: str, units: int) -> int:
    """Labels a head of ``kind`` with ``units`` values has (binary: negative and positive)."""
    return 2 if kind == "binary" else units


def by_head(heads: list[str], given: dict[str | None, T] | None, flag: str) -> dict[str, T]:
    """A per-head option (``--head``, ``--labels``) by head name, None meaning the only head;
    :class:`ValueError` for an ambiguous or unknown head. ``flag``: e.g. ``--head HEAD=KIND``."""
    named = dict(given or {})
    if None in named:
        if len(heads) != 1:
            raise ValueError(
                f"the model has {len(heads)} heads ({', '.join(heads)}): name one, {flag}"
            )
        named[heads[0]] = named.pop(None)
    unknown = sorted(str(head) for head in set(named) - set(heads))
    if unknown:
        raise ValueError(
            f"{flag.split()[0]} for {', '.join(unknown)}: the model's heads are {', '.join(heads)}"
        )
    return named  # type: ignore[return-value]  # None was replaced by a name


def read_heads_file(directory: Path) -> dict[str, HeadKind]:
    """``heads.json`` beside a SavedModel (empty when there is none); :class:`ValueError`
    saying what is wrong with it."""
    path = Path(directory) / HEADS_FILE
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as file:
            data = file.read(MAX_HEADS_FILE_BYTES + 1)
        if len(data) > MAX_HEADS_FILE_BYTES:
            raise ValueError(f"{HEADS_FILE}: at most {MAX_HEADS_FILE_BYTES:,} bytes")
        return _DECLARED.validate_python(json.loads(data))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{HEADS_FILE}: not a JSON object") from None
    except ValidationError:
        raise ValueError(
            f'{HEADS_FILE}: {{"<output>": "<kind>"}}, kinds {", ".join(KINDS)}'
        ) from None
