"""Decision rules on synthetic, calibrated predictions where the truth is known."""
from __future__ import annotations

import numpy as np
import pytest

from emlc_cli.decide import rules as corrections
from emlc_cli.recipe.schema import CorrectConfig


def synthetic(noise: float, n: int = 4000, classes: int = 5, signal: float = 2.0, seed: int = 0):
    """Calibrated class probabilities (a Gaussian-logit model) and symmetric label noise at rate `noise`."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), true] += signal
    probs = corrections.softmax(signal * logits)  # the exact posterior of this model: calibrated
    flip = rng.random(n) < noise
    given = np.where(flip, (true + rng.integers(1, classes, n)) % classes, true)
    return probs, given, true


def test_transition_rows_are_distributions():
    probs, given, _ = synthetic(0.3)
    t = corrections.transition_matrix(probs, given, 5)
    assert np.allclose(t.sum(1), 1) and (t >= 0).all()


@pytest.mark.parametrize("noise", [0.05, 0.2, 0.5])
def test_em_moves_the_noise_estimate_toward_the_truth(noise):
    probs, given, true = synthetic(noise)
    first = np.diag(corrections.transition_matrix(probs, given, 5)).mean()
    refined = np.diag(corrections.estimate_transition(probs, given, 5)).mean()
    assert abs(refined - (1 - noise)) < abs(first - (1 - noise))


@pytest.mark.parametrize("noise", [0.05, 0.1, 0.3, 0.5])
def test_posterior_rule_never_harms_and_helps_under_heavy_noise(noise):
    probs, given, true = synthetic(noise)
    fixed = corrections.correct(probs, np.full(len(given), 0.5), given, CorrectConfig(rule="posterior"))
    given_acc, corrected_acc = (given == true).mean(), (fixed.labels == true).mean()
    assert corrected_acc >= given_acc - 0.005
    if noise >= 0.3:
        assert corrected_acc > given_acc + 0.05


def test_argmax_rule_follows_the_retain_weight():
    probs = np.array([[0.1, 0.9], [0.1, 0.9]])
    given = np.array([0, 0])
    fixed = corrections.correct(probs, np.array([0.9, 0.1]), given, CorrectConfig(rule="argmax"))
    assert fixed.labels.tolist() == [0, 1]


def test_threshold_rule_keeps_unconfident_changes():
    probs = np.array([[0.2, 0.8], [0.0, 1.0]])
    fixed = corrections.correct(probs, np.array([0.3, 0.0]), np.array([0, 0]), CorrectConfig(rule="threshold", threshold=0.9))
    assert fixed.labels.tolist() == [0, 1]


def test_temperature_fit_recovers_a_known_temperature():
    probs, _, true = synthetic(0.0, n=3000)
    sharpened = np.log(probs) * 3.0  # overconfident by a factor 3
    assert corrections.fit_temperature(sharpened, true) == pytest.approx(3.0, rel=0.15)


def test_verification_candidates_put_uncertain_rows_first():
    probs, given, _ = synthetic(0.3, n=500)
    fixed = corrections.correct(probs, np.full(500, 0.5), given, CorrectConfig(rule="posterior"))
    rows = corrections.verification_candidates(fixed, given, np.full(500, 0.5), probs, probs, limit=50)
    priorities = [p for _, _, p in rows]
    assert len(rows) == 50 and priorities == sorted(priorities, reverse=True)
    assert fixed.confidence[rows[0][0]] <= np.median(fixed.confidence)


def test_em_in_blocks_equals_em_in_one_block(monkeypatch):
    rng = np.random.default_rng(3)
    probs = corrections.softmax(rng.normal(0, 2, (1000, 7))).astype(np.float32)
    given = rng.integers(0, 7, 1000)
    whole = corrections.estimate_transition(probs, given, 7)
    monkeypatch.setattr(corrections, "CHUNK", 64)
    blocks = corrections.estimate_transition(probs, given, 7)
    assert np.allclose(whole, blocks, atol=1e-6) and np.allclose(blocks.sum(1), 1)
