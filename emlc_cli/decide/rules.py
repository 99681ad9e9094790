"""From predictions to corrected labels: the decision rules, as pure numpy functions.

Rules (recipe key `correct.rule`; RULES maps each name to its function):
- argmax: the label of the EMLC corrected target w * onehot(given) + (1 - w) * p.
- threshold: as argmax, but a label changes only when the corrected target's top probability
  reaches `correct.threshold`.
- posterior: Bayes with an estimated noise transition matrix: q(y | x, given) is proportional to
  p(y | x) * T[y, given], with p temperature-calibrated on the clean holdout and T estimated from
  the noisy pool by EM. Light noise gives a near-diagonal T, so labels rarely move; heavy noise lets
  confident predictions overrule the given label.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from emlc_cli.recipe.schema import CorrectConfig


@dataclass
class Corrections:
    labels: np.ndarray        # corrected class index per row
    confidence: np.ndarray    # top probability of the distribution the label came from
    distribution: np.ndarray  # N x C


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(-1, keepdims=True)


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the holdout NLL (a grid: robust with ~100 samples)."""
    if len(labels) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    nll = [-np.log(softmax(log_probs / t)[np.arange(len(labels)), labels] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


CHUNK = 65536  # rows per block in the EM: memory O(CHUNK x C + C^2) at any pool size


def transition_matrix(probs: np.ndarray, given: np.ndarray, num_classes: int, prior: float = 1.0) -> np.ndarray:
    """T[y, g] ~ P(given = g | true = y), from soft true-class predictions on the noisy pool."""
    return _normalised(_soft_confusion(probs, given, num_classes, None), prior)


def estimate_transition(probs: np.ndarray, given: np.ndarray, num_classes: int, iterations: int = 30) -> np.ndarray:
    """EM for T: start from the soft confusion of p and the given labels, then re-estimate it from the
    posteriors. The first estimate counts every classifier error as label noise (too little diagonal);
    the iterations move the noise the given labels explain back onto the diagonal. Block by block, so that a
    million rows of a thousand classes never need an N x C temporary."""
    transition = transition_matrix(probs, given, num_classes)
    for _ in range(iterations):
        transition = _normalised(_soft_confusion(probs, given, num_classes, transition), 1.0)
    return transition


def _soft_confusion(probs: np.ndarray, given: np.ndarray, num_classes: int, transition: np.ndarray | None) -> np.ndarray:
    """sum over rows of q(y | row) for each (y, given): q = p, or the posterior under `transition`."""
    joint = np.zeros((num_classes, num_classes))
    for start in range(0, len(given), CHUNK):
        p, g = probs[start:start + CHUNK], given[start:start + CHUNK]
        q = p if transition is None else posterior(p, g, transition)
        onehot = np.zeros((len(g), num_classes), dtype=q.dtype)
        onehot[np.arange(len(g)), g] = 1
        joint += (q.T @ onehot).astype(np.float64)
    return joint


def _normalised(joint: np.ndarray, prior: float) -> np.ndarray:
    joint = joint + prior / joint.shape[0]
    return joint / joint.sum(1, keepdims=True)


def emlc_targets(probs: np.ndarray, retain: np.ndarray, given: np.ndarray) -> np.ndarray:
    onehot = np.eye(probs.shape[1])[given]
    return retain[:, None] * onehot + (1 - retain[:, None]) * probs


def posterior(probs: np.ndarray, given: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """q(y | x, given) proportional to p(y | x) T[y, given], in the dtype of `probs`."""
    joint = probs * transition.T.astype(probs.dtype, copy=False)[given]
    return joint / np.clip(joint.sum(1, keepdims=True), 1e-12, None)


def argmax_rule(probs: np.ndarray, retain: np.ndarray, given: np.ndarray, config: "CorrectConfig") -> Corrections:
    """The EMLC corrected target's argmax."""
    dist = emlc_targets(probs, retain, given)
    return Corrections(dist.argmax(1), dist.max(1), dist)


def threshold_rule(probs: np.ndarray, retain: np.ndarray, given: np.ndarray, config: "CorrectConfig") -> Corrections:
    """As argmax, but a label changes only when the target's top probability reaches `correct.threshold`."""
    dist = emlc_targets(probs, retain, given)
    labels, confidence = dist.argmax(1), dist.max(1)
    keep = confidence < config.threshold
    return Corrections(np.where(keep, given, labels), np.where(keep, dist[np.arange(len(given)), given], confidence), dist)


def posterior_rule(probs: np.ndarray, retain: np.ndarray, given: np.ndarray, config: "CorrectConfig") -> Corrections:
    """Bayes with the EM noise transition (the pipeline validates it on the holdout first: evidence.py)."""
    dist = posterior(probs, given, estimate_transition(probs, given, probs.shape[1]))
    return Corrections(dist.argmax(1), dist.max(1), dist)


Rule = Callable[[np.ndarray, np.ndarray, np.ndarray, "CorrectConfig"], Corrections]
RULES: dict[str, Rule] = {"argmax": argmax_rule, "threshold": threshold_rule, "posterior": posterior_rule}


def correct(probs: np.ndarray, retain: np.ndarray, given: np.ndarray, config: "CorrectConfig") -> Corrections:
    """Apply the rule `config.rule` (the recipe's `correct` section) to calibrated class probabilities `probs` and
    the enhancer's `retain` weights."""
    return RULES[config.rule](probs, retain, given, config)


def verification_candidates(fixed: Corrections, given: np.ndarray, retain: np.ndarray, teacher: np.ndarray,
                            student: np.ndarray, limit: int | None = None) -> list[tuple[int, str, float]]:
    """Rows whose verification would help the next round most: the least certain decisions first.

    priority = 1 - confidence of the decision, raised when teacher and student disagree or when the
    enhancer's retain weight contradicts the decision. Returns (row, reason, priority), best first.
    """
    n = len(given)
    limit = limit if limit is not None else min(n, max(100, n // 20))
    changed = fixed.labels != given
    disagree = teacher.argmax(1) != student.argmax(1)
    contradicts = np.where(changed, retain > 0.5, retain < 0.5)
    priority = (1.0 - fixed.confidence) + 0.25 * disagree + 0.25 * contradicts
    order = np.argsort(-priority, kind="stable")[:limit]
    return [(int(i), _reason(bool(changed[i]), float(fixed.confidence[i]), bool(disagree[i]), bool(contradicts[i])),
             float(priority[i])) for i in order]


def _reason(changed: bool, confidence: float, disagree: bool, contradicts: bool) -> str:
    verdict = "label changed" if changed else "label kept"
    parts = [f"{verdict} with low confidence ({confidence:.2f})" if confidence < 0.8 else verdict]
    if disagree:
        parts.append("teacher and student disagree")
    if contradicts:
        parts.append("enhancer " + ("would keep the given label" if changed else "doubts the given label"))
    return "; ".join(parts)
