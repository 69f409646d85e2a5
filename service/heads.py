"""The images' head outputs as the answers of ``/predict``, by each head's kind.

Plain dicts of the shape of :data:`~service.schemas.Output` (tests validate every answer
against the schema): this runs for every image on the hot path, and building model instances
to serialise them again costs 4x as much as the dicts (measured).
"""

from __future__ import annotations

import numpy as np

from training.metadata import ModelMetadata, OutputSpec


def answers(
    metadata: ModelMetadata,
    outputs: dict[str, np.ndarray],
    top_k: int,
    threshold: float = OutputSpec.THRESHOLD,
    probabilities: bool = True,
) -> list[dict[str, dict]]:
    """Every image's outputs, per head: labels and confidences, or named values. A class
    head is ranked for the whole batch at once; ``probabilities=False`` leaves out its
    per-label probabilities (``cnn-serve predict`` reads the label, confidence and top-k)."""
    n = len(next(iter(outputs.values())))
    described: list[dict[str, dict]] = [{} for _ in range(n)]
    for spec in metadata.outputs:
        values = outputs[spec.name]
        if spec.kind in ("multiclass", "logits"):
            _rank(spec, values, top_k, probabilities, described)
        elif spec.binary:
            negative, positive = spec.labels
            for answer, p in zip(described, values[:, 0].tolist()):
                label = positive if p >= spec.THRESHOLD else negative
                answer[spec.name] = {"kind": "binary", "label": label, "probability": p}
        else:
            for answer, row in zip(described, values.tolist()):
                answer[spec.name] = _values(spec, row, threshold)
    return described


def _rank(
    spec: OutputSpec,
    values: np.ndarray,
    top_k: int,
    probabilities: bool,
    described: list[dict[str, dict]],
) -> None:
    """A multiclass or logits head's answers (logits: probabilities are their softmax)."""
    labels, units = spec.labels, range(len(spec.labels))
    rows = spec.label_scores(values).tolist()  # one conversion for the batch
    raw = values.tolist() if spec.kind == "logits" else None
    for i, (answer, row) in enumerate(zip(described, rows)):
        # sorted() beats NumPy's argsort on a few rows (a request is mostly one image)
        ranks = sorted(units, key=row.__getitem__, reverse=True)[:top_k]
        best = ranks[0]
        one = {
            "kind": spec.kind,
            "label": labels[best],
            "index": best,
            "confidence": row[best],
            "top_k": [{"label": labels[j], "index": j, "confidence": row[j]} for j in ranks],
        }
        if probabilities:
            one["probabilities"] = dict(zip(labels, row))
        if raw is not None:
            one["logits"] = dict(zip(labels, raw[i]))
        answer[spec.name] = one


def _values(spec: OutputSpec, row: list[float], threshold: float) -> dict:
    """A multilabel, regression or raw head's answer for one image."""
    if spec.kind == "multilabel":
        return {
            "kind": "multilabel",
            "labels": [label for label, p in zip(spec.labels, row) if p >= threshold],
            "threshold": threshold,
            "probabilities": dict(zip(spec.labels, row)),
        }
    return {"kind": spec.kind, "values": dict(zip(spec.labels, row))}
