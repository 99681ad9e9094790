"""Accuracy, per-class precision/recall, detection scores, change matrices and the Wilson interval. Pure numpy."""
from __future__ import annotations

import math

import numpy as np

Z = 1.96  # two-sided 95 % intervals


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float((np.asarray(predicted) == np.asarray(truth)).mean()) if len(truth) else float("nan")


def change_matrix(given: np.ndarray, corrected: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[g, c]: rows given label g that ended as c."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (given, corrected), 1)
    return counts


def per_class(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> list[dict[str, float]]:
    rows = []
    for c in range(num_classes):
        tp = int(((predicted == c) & (truth == c)).sum())
        pred_c, true_c = int((predicted == c).sum()), int((truth == c).sum())
        rows.append({"precision": tp / pred_c if pred_c else 0.0, "recall": tp / true_c if true_c else 0.0, "support": true_c})
    return rows


def detection(flagged: np.ndarray, actually_noisy: np.ndarray) -> dict[str, float]:
    """Precision / recall / F1 of `flagged` (label changed) as a detector of wrong given labels."""
    tp = int((flagged & actually_noisy).sum())
    precision = tp / int(flagged.sum()) if flagged.any() else 0.0
    recall = tp / int(actually_noisy.sum()) if actually_noisy.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def wilson(successes: float, n: float) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
