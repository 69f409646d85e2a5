"""How good a head is on labelled images: the metrics of ``cnn-serve evaluate``, from the
true and predicted labels (NumPy; the confusion matrix's rows are the true labels, its
columns the predicted ones)."""

from __future__ import annotations

import numpy as np


def classification(labels: list[str], true: list[int], predicted: list[int]) -> dict:
    """Accuracy, per-class precision, recall, F1 and support, and the confusion matrix."""
    k = len(labels)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    claimed = confusion.sum(axis=0)
    precision = np.divide(correct, claimed, out=np.zeros(k), where=claimed > 0)
    recall = np.divide(correct, support, out=np.zeros(k), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(k), where=total > 0)
    n = int(confusion.sum())
    return {
        "n": n,
        "accuracy": float(correct.sum() / n) if n else 0.0,
        "labels": labels,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": confusion.tolist(),
    }


def regression(true: list[float], predicted: list[float]) -> dict:
    """Mean absolute error and root mean squared error."""
    errors = np.asarray(predicted, np.float64) - np.asarray(true, np.float64)
    n = len(errors)
    return {
        "n": n,
        "mae": float(np.abs(errors).mean()) if n else 0.0,
        "rmse": float(np.sqrt((errors**2).mean())) if n else 0.0,
    }
