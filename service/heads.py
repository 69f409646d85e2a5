"""One image's head outputs as the answer of ``/predict``, by the head's kind.

Plain dicts of the shape of :data:`~service.schemas.Output` (tests validate every answer
against the schema): this runs once per image on the hot path, and building model instances
to serialise them again costs 4x as much as the dicts (measured).
"""

from __future__ import annotations

import numpy as np

from training.metadata import ModelMetadata, OutputSpec


def describe(
    metadata: ModelMetadata,
    outputs: dict[str, np.ndarray],
    index: int,
    top_k: int,
    threshold: float = OutputSpec.THRESHOLD,
) -> dict[str, dict]:
    """Image ``index``'s outputs, per head: labels and confidences, or named values."""
    return {
        spec.name: _describe(spec, outputs[spec.name][index], top_k, threshold)
        for spec in metadata.outputs
    }


def _describe(spec: OutputSpec, row: np.ndarray, top_k: int, threshold: float) -> dict:
    values = row.tolist()
    if spec.binary:
        p = values[0]
        return {"kind": "binary", "label": spec.labels[int(p >= spec.THRESHOLD)], "probability": p}
    if spec.kind == "multilabel":
        return {
            "kind": "multilabel",
            "labels": [label for label, p in zip(spec.labels, values) if p >= threshold],
            "threshold": threshold,
            "probabilities": dict(zip(spec.labels, values)),
        }
    if not spec.classifies:  # regression, raw
        return {"kind": spec.kind, "values": dict(zip(spec.labels, values))}
    if spec.kind == "logits":
        answer = _ranked(spec, spec.label_scores(row[None])[0].tolist(), top_k)  # softmax
        answer["logits"] = dict(zip(spec.labels, values))
        return answer
    return _ranked(spec, values, top_k)


def _ranked(spec: OutputSpec, scores: list[float], top_k: int) -> dict:
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    best = order[0]
    return {
        "kind": spec.kind,
        "label": spec.labels[best],
        "index": best,
        "confidence": scores[best],
        "top_k": [
            {"label": spec.labels[i], "index": i, "confidence": scores[i]} for i in order[:top_k]
        ],
        "probabilities": dict(zip(spec.labels, scores)),
    }
