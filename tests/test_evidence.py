"""The guarded decision and the label-accuracy estimate, on synthetic predictions where the truth is known."""
from __future__ import annotations

import math

import numpy as np

from emlc_cli.decide import rules as corrections, evidence


def task(noise: float, signal: float, n: int = 3000, holdout: int = 300, classes: int = 5, seed: int = 0):
    """Calibrated probabilities of a Gaussian-logit model (stronger with `signal`), symmetric noise at `noise`."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n + holdout)
    logits = rng.normal(0, 1, (n + holdout, classes))
    logits[np.arange(n + holdout), true] += signal
    probs = corrections.softmax(signal * logits)
    flip = rng.random(n + holdout) < noise
    given = np.where(flip, (true + rng.integers(1, classes, n + holdout)) % classes, true)
    return probs[:n], given[:n], true[:n], probs[n:], true[n:], given[n:]


def judged(noise: float, signal: float, in_place: bool, holdout: int = 300, trained_on: int = 300, **kw):
    """The decision checked on `holdout` verified images, with `trained_on` more verified images (not checked: the
    model trained on them) in the verified set."""
    probs, given, true, vp, vl, vg = task(noise, signal, holdout=holdout + trained_on, **kw)
    em = corrections.estimate_transition(probs, given, probs.shape[1])
    verified_given = vg if in_place else vl
    return evidence.judge(probs, given, vp[:holdout], vl[:holdout], verified_given[:holdout], vl, verified_given, em), given, true


def test_a_weak_model_changes_nothing_and_says_why():
    result, given, true = judged(0.1, 0.3, in_place=False)
    assert (result.labels == given).all()
    assert result.report["too_weak"] and "no rule beat the given labels" in result.report["reason"]


def test_a_strong_model_corrects_heavy_noise():
    result, given, true = judged(0.4, 2.0, in_place=False)
    assert (result.labels == true).mean() > (given == true).mean() + 0.2
    assert result.report["margin"] is not None


def test_never_worse_than_the_given_labels_across_noise_and_strength():
    for noise in (0.05, 0.2, 0.5):
        for signal in (0.2, 0.8, 2.0):
            result, given, true = judged(noise, signal, in_place=True, seed=1)
            assert (result.labels == true).mean() >= (given == true).mean() - 0.003, (noise, signal)


def test_in_place_pairs_estimate_the_given_accuracy_with_an_interval():
    covered, errors = 0, []
    for seed in range(10):
        result, given, true = judged(0.3, 1.0, in_place=True, n=2000, holdout=400, trained_on=0, seed=seed)
        report = result.report
        assert report["in_place_pairs"] == 400 and report["source"].startswith("verified images kept in place")
        covered += report["given"]["low"] <= (given == true).mean() <= report["given"]["high"]
        errors.append(report["corrected"]["estimate"] - (result.labels == true).mean())
    assert covered >= 8  # a 95 % interval
    assert abs(np.mean(errors)) < 0.02 and max(map(abs, errors)) < 0.06


def test_verified_filed_under_their_class_are_not_taken_for_noise_free_pairs():
    counts = evidence.pair_counts(np.array([0, 1, 2, 1]), np.array([0, 1, 2, 1]), 3)
    assert not evidence.in_place(counts)
    assert evidence.in_place(evidence.pair_counts(np.array([0, 1]), np.array([0, 2]), 3))


def test_label_chances_are_distributions_that_keep_the_diagonal():
    probs, given, true, hp, hl, _ = task(0.3, 1.0, n=50, holdout=50)
    transition = corrections.estimate_transition(probs, given, 5)
    chances = evidence.label_chances(hp, hl, transition)
    assert np.allclose(chances.sum(1), 1) and np.allclose(chances[np.arange(50), hl], transition[hl, hl])


def test_wilson_interval_contains_the_proportion_and_narrows():
    low, high = evidence.wilson(90, 100)
    assert low < 0.9 < high and high - low > evidence.wilson(900, 1000)[1] - evidence.wilson(900, 1000)[0]
    assert evidence.wilson(0, 0) == (0.0, 1.0)


def test_too_few_holdout_images_change_nothing():
    decision = evidence.choose_rule(np.eye(3)[:1], np.array([0]), {0.5: np.eye(3), 0.0: np.eye(3)})
    assert math.isinf(decision.margin) and "at least 6 are needed" in decision.reason


def test_small_verified_sets_hold_out_enough_to_check_corrections():
    from emlc_cli.prepare.verified import _holdout

    small = {i: i % 10 for i in range(100)}
    large = {i: i % 10 for i in range(1000)}
    assert 28 <= len(_holdout(small, 0.1, 0)) <= 34 and len(_holdout(large, 0.1, 0)) == 100
    assert _holdout(small, 0.0, 0) == []


def test_shrinking_keeps_the_mean_noise_and_rows_sum_to_one():
    em = np.array([[0.8, 0.2, 0.0], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]])
    shrunk = evidence.shrink_transition(em)
    assert np.allclose(shrunk.sum(1), 1) and np.isclose(np.diag(shrunk).mean(), np.diag(em).mean())
    assert np.allclose(shrunk[0, 2], 0.5 * (1 - 0.8) / 2)


def test_a_model_too_weak_to_correct_claims_no_accuracy_without_in_place_pairs():
    result, _, _ = judged(0.3, 0.2, in_place=False)
    report = result.report
    assert report["too_weak"] and report["given"] is None and report["noise_rate"] is None
    assert "in place" in report["source"] and 0 <= report["noise_rate_model"] <= 1


def look_alike_flips(seed: int, n: int = 5000, holdout: int = 100, classes: int = 10):
    """Each even class loses 40 % of its labels to its look-alike (class ^ 1), as CIFAR's truck -> automobile."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n + holdout)
    look_alike = np.arange(classes) ^ 1
    logits = rng.normal(0, 1, (n + holdout, classes))
    logits[np.arange(n + holdout), true] += 1.0
    logits[np.arange(n + holdout), look_alike[true]] += 0.3
    probs = corrections.softmax(logits)
    given = np.where((rng.random(n + holdout) < 0.4) & (true % 2 == 0), look_alike[true], true)
    return probs[:n], given[:n], true[:n], probs[n:], true[n:]


def test_look_alike_flips_may_use_the_em_transition_and_never_lose_by_it(monkeypatch):
    gains = []
    for seed in range(4):
        probs, given, true, hp, hl = look_alike_flips(seed)
        em = corrections.estimate_transition(probs, given, probs.shape[1])
        verified = np.tile(hl, 10)  # the holdout is a tenth of the verified images
        both = evidence.judge(probs, given, hp, hl, hl, verified, verified, em)
        with monkeypatch.context() as patched:
            patched.setattr(evidence, "SHRINKS", (0.5,))
            halfway = evidence.judge(probs, given, hp, hl, hl, verified, verified, em)
        assert (both.labels == true).mean() >= (given == true).mean()
        gains.append((both.labels == true).mean() - (halfway.labels == true).mean())
        if both.decision.shrink == 0.0:
            assert both.report["margin"] is not None
    assert min(gains) >= 0 and max(gains) > 0.01, gains


def test_a_model_based_estimate_leaves_room_for_the_optimism_measured_in_benchmarks():
    result, given, true = judged(0.4, 2.0, in_place=False)
    estimate = result.report["given"]
    assert result.report["source"].startswith("model")
    assert estimate["low"] <= estimate["estimate"] - evidence.MODEL_OPTIMISM + 1e-9 < estimate["high"]
    assert result.report["corrected"]["low"] < result.report["corrected"]["estimate"] - 0.1


def test_a_small_holdout_weighs_only_the_conservative_rules():
    """Under SMALL_HOLDOUT images EM's own transition and margins under 1 are not candidates: on 31 images such a
    rule passed the bound and cost 1.7 points (sym10-3k). The same evidence on more images may use them."""
    labels = np.arange(30) % 3
    probs = np.full((30, 3), 0.02)
    probs[np.arange(30), labels] = 0.96
    transition = np.full((3, 3), 0.15)
    np.fill_diagonal(transition, 0.7)
    transitions = {0.5: transition, 0.0: transition}
    small = evidence.choose_rule(probs, labels, transitions)
    large = evidence.choose_rule(np.tile(probs, (2, 1)), np.tile(labels, 2), transitions)
    few_verified = evidence.choose_rule(np.tile(probs, (2, 1)), np.tile(labels, 2), transitions, small=True)
    assert math.isfinite(small.margin) and small.margin >= evidence.SMALL_MIN_MARGIN and small.shrink == 0.5
    assert large.margin < evidence.SMALL_MIN_MARGIN
    assert few_verified.margin >= evidence.SMALL_MIN_MARGIN  # 60 checked images, but from under 300 verified


def test_with_few_verified_images_a_model_weaker_than_the_labels_does_not_overrule_them():
    """Under SMALL_VERIFIED verified images the model must be at least as accurate on the checked ones as the given
    labels are estimated to be (on 600 + 100 feature rows, 27-47 % accurate models cost 2 to 10 points). The price,
    measured here: on well-behaved synthetic noise the same model with 100 more verified images gains 8 points."""
    few, given, true = judged(0.4, 1.2, in_place=False, holdout=200, trained_on=0)
    assert (few.labels == given).all() and few.report["too_weak"]
    assert "too weak to overrule them" in few.report["reason"] and "58% accurate on the 200 verified" in few.report["reason"]
    more, given, true = judged(0.4, 1.2, in_place=False, holdout=200, trained_on=100)
    assert (more.labels == true).mean() > (given == true).mean() + 0.05


def test_a_model_far_weaker_than_the_labels_gets_an_interval_open_both_ways():
    em = np.full((10, 10), 0.22 / 9)
    np.fill_diagonal(em, 0.78)  # the model reads the labels as 78 % right
    labels = np.repeat(np.arange(10), 30)
    decision = evidence.Decision(1.0, 0.004, 0.001, "")
    report = lambda accuracy: evidence.accuracy_report(np.diag(np.full(10, 30.0)), False, em, labels, decision, 0.004, 94,  # noqa: E731
                                                       True, accuracy)
    given = report(None)["given"]["estimate"]
    for close in (None, given - 0.10):  # a model nearly as good as the labels: the optimistic bias only
        assert report(close)["given"]["high"] < given + 0.06 and "both" not in report(close)["source"]
    weak = report(0.49)  # sym10-3k, cross-fitted: 49 % accurate, labels read 78 % where they were 90 %
    assert weak["given"]["high"] >= given + evidence.MODEL_OPTIMISM - 1e-9 and weak["given"]["high"] >= 0.90
    assert weak["corrected"]["high"] > weak["given"]["high"] and "49% accurate" in weak["source"]
    assert weak["given"]["low"] == 0.49 < report(None)["given"]["low"] and "either way" in weak["source"]
    np.fill_diagonal(em, 0.93)
    em[~np.eye(10, dtype=bool)] = 0.07 / 9  # inst40-10k: labels read 93 % right by a model 44 % accurate; truth 60 %
    inst = report(0.44)["given"]
    assert inst["low"] <= 0.60 <= inst["high"] and report(0.80)["given"]["low"] > 0.60


def _checks(fixes: int, breaks: int, n: int = 300):
    """n in-place checks of 3 classes: `fixes` wrongly given images the rule puts right, `breaks` rightly given
    images it changes, the rest left alone (their probabilities back the given label)."""
    labels, given = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    probs = np.full((n, 3), 0.01)
    probs[:, 0] = 0.98
    given[:fixes] = 1  # wrong, and the model backs the true class 0
    probs[fixes:fixes + breaks] = [0.01, 0.01, 0.98]  # right, but the model backs class 2
    em = np.full((3, 3), 0.1)
    np.fill_diagonal(em, 0.8)
    return probs, labels, given, em


def test_in_place_checks_must_see_enough_of_a_rules_changes():
    """real17-3k-inplace, cross-fitted: 5 fixes and no break among 300 checks passed the 95 % bound, and the rule
    cost 0.3 points on the pool. A rule must change at least MIN_CHANGED_CHECKS checked images."""
    probs, labels, given, em = _checks(5, 0)
    assert math.isinf(evidence.choose_rule(probs, labels, {0.5: em, 0.0: em}, given=given).margin)
    probs, labels, given, em = _checks(evidence.MIN_CHANGED_CHECKS, 0)
    assert math.isfinite(evidence.choose_rule(probs, labels, {0.5: em, 0.0: em}, given=given).margin)


def test_under_500_verified_images_every_bound_is_99_percent():
    """sym10-3k, cross-fitted: 300 checks, a simulated gain of 0.95 +- 0.50 points passed the 95 % bound and the
    rule cost 0.67 points. 14 fixes and 5 breaks in 300 clear 95 % but not 99 %."""
    probs, labels, given, em = _checks(14, 5)
    transitions = {0.5: em, 0.0: em}
    assert math.isfinite(evidence.choose_rule(probs, labels, transitions, given=given).margin)
    assert math.isinf(evidence.choose_rule(probs, labels, transitions, given=given, strict=True).margin)
    for verified, refused in ((300, True), (evidence.STRICT_VERIFIED, False)):
        vl, vg = np.zeros(verified, dtype=np.int64), np.zeros(verified, dtype=np.int64)
        vg[:30] = 1  # in place: some verified labels disagree with the data
        judged = evidence.judge(probs, given, probs, labels, given, vl, vg, em)
        assert math.isinf(judged.decision.margin) == refused, verified
