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


def brief(
    metadata: ModelMetadata, outputs: dict[str, np.ndarray], top_k: int, threshold: float
) -> list[dict[str, dict]]:
    """Every image's answer as :func:`describe` gives it, computed for the whole batch at once
    and without a class head's per-label ``probabilities`` (what ``cnn-serve predict`` and
    ``evaluate`` read: 10,000 images answered one by one took a fifth of the run)."""
    n = len(next(iter(outputs.values())))
    answers: list[dict[str, dict]] = [{} for _ in range(n)]
    for spec in metadata.outputs:
        values = outputs[spec.name]
        if spec.kind in ("multiclass", "logits"):
            scores = spec.label_scores(values)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
            best = np.take_along_axis(scores, order, axis=1)
            labels = spec.labels
            for answer, ranks, confidences in zip(answers, order.tolist(), best.tolist()):
                answer[spec.name] = {
                    "kind": spec.kind,
                    "label": labels[ranks[0]],
                    "index": ranks[0],
                    "confidence": confidences[0],
                    "top_k": [
                        {"label": labels[i], "index": i, "confidence": c}
                        for i, c in zip(ranks, confidences)
                    ],
                }
        elif spec.binary:
            p = values[:, 0].tolist()
            for answer, chosen, prob in zip(answers, spec.decide(values).tolist(), p):
                answer[spec.name] = {
                    "kind": "binary",
                    "label": spec.labels[chosen],
                    "probability": prob,
                }
        else:
            for i, answer in enumerate(answers):
                answer[spec.name] = _describe(spec, values[i], top_k, threshold)
    return answers
