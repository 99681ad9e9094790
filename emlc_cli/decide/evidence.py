"""What the verified images say about the noise and about a decision, before any label is changed.

Pure numpy. The verified holdout (with `correct.cross_fit`: every verified image, each scored by a fold model that
did not train on it) is the only data the model did not train on, so it is where a decision is
validated: each holdout image (true label y, out-of-sample probabilities p) is scored as if it had arrived with
given label g, weighted by the chance that it would be labelled g (`label_chances`). Verified images kept *in
place* (their given label in DATA differs from the verified label for some of them) are direct observations of
the noise: their (verified, given) pairs estimate T and the given labels' accuracy without any model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from emlc_cli.decide.rules import posterior
from emlc_cli.metrics import Z, wilson

MARGINS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)  # log-odds a new label must win by over the given one
SHRINKS = (0.5, 0.0)  # the transition pulled halfway towards symmetric (the default), and EM's own
Z_ONE_SIDED = 1.645  # a margin is used only when its gain is above zero with 95 % confidence
Z_SMALL, SMALL_HOLDOUT = 2.326, 50  # 99 % below 50 images: there the spread itself is estimated from few, mostly-zero gains
MODEL_OPTIMISM = 0.15  # the model-based given accuracy read up to 13.9 points above the truth (benchmarks/RESULTS.md)
MODEL_SOURCE = ("model (noise transition estimated from the noisy pool; reads optimistic by up to 14 points in our "
                "benchmarks, which the interval's low end allows for)")
CROSS_FITTED_SOURCE = ("model, cross-fitted (noise transition estimated from predictions of models that never trained on "
                       "the images they judged; the given labels read 3 to 8 points optimistic in our benchmarks on "
                       "real human noise, where the in-sample student read 10 to 14)")
MIN_HOLDOUT = 6  # below this the spread of the holdout gain cannot be estimated at all
SMALL_MIN_MARGIN = 1.0  # below SMALL_HOLDOUT images: the default transition only, and margins from this one up
SMALL_VERIFIED = 300  # fewer verified images than this is small too, however many of them check the decision
STRICT_VERIFIED = 500  # fewer verified images than this: a 99 % bound, however many of them check the decision
MIN_CHANGED_CHECKS = 10  # in-place checks a rule must change (fix or break) before their gain can speak for it


@dataclass
class Decision:
    """The rule chosen (transition shrink and margin) and what the holdout says it does to label accuracy (a
    fraction, per noisy image; the worst case over the noise models simulated)."""

    margin: float          # math.inf: change nothing
    gain: float            # estimated accuracy change of the noisy pool
    gain_se: float
    reason: str
    shrink: float = 0.5    # how far the rule's transition was pulled towards symmetric
    gains: list[np.ndarray] = field(default_factory=list, repr=False)  # per holdout image, one per noise model


def pair_counts(verified: np.ndarray, given: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[y, g]: verified images of true class y whose label in DATA is g."""
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (verified, given), 1)
    return counts


def in_place(counts: np.ndarray) -> bool:
    """Verified images filed under their verified class show no disagreement at all; one disagreement means
    the user verified images where they were, and the pairs measure the noise."""
    return bool(counts.sum() - np.trace(counts) > 0)


def shrink_transition(em: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """EM's transition pulled `weight` of the way towards its symmetric version (the same mean diagonal, the rest
    spread evenly). A weak model's EM gets the mean noise roughly right but not where it goes; in our benchmarks
    halfway was, of 0, 1/4, 1/2 and 3/4, the best or within 0.2 points of it on light and heavy real noise
    alike, and 6 points worse than EM's own on look-alike flips (CIFAR's truck -> automobile), which is why the
    guard may choose either (benchmarks/RESULTS.md)."""
    k = em.shape[0]
    stay = float(np.diag(em).mean())
    symmetric = np.full((k, k), (1 - stay) / max(1, k - 1))
    np.fill_diagonal(symmetric, stay)
    return (1 - weight) * em + weight * symmetric


def blend_transition(em: np.ndarray, counts: np.ndarray, strength: float = 10.0) -> np.ndarray:
    """Each row's observed pairs with the EM estimate as a Dirichlet prior worth `strength` images."""
    blended = counts + strength * em
    return blended / blended.sum(1, keepdims=True)


def given_accuracy(transition: np.ndarray, class_prior: np.ndarray) -> float:
    """P(given label = true label) under class prior pi and transition T."""
    return float(class_prior @ np.diag(transition))


def decide(probs: np.ndarray, given: np.ndarray, transition: np.ndarray, margin: float) -> np.ndarray:
    """The posterior rule with a margin: q(y) ~ p(y) T[y, given]; move to argmax q only when
    log q(new) - log q(given) > margin."""
    joint = probs * transition.T.astype(probs.dtype, copy=False)[given]
    best = joint.argmax(1)
    rows = np.arange(len(given))
    lead = np.log(joint[rows, best] + 1e-300) - np.log(joint[rows, given] + 1e-300)
    return np.where(lead > margin, best, given)


def holdout_gains(probs: np.ndarray, labels: np.ndarray, rule: np.ndarray, margin: float,
                  given: np.ndarray | None = None, noise: np.ndarray | None = None) -> np.ndarray:
    """Per holdout image: the expected accuracy change of deciding with transition `rule` and `margin`. With
    `given` (in-place pairs) the image's real given label is used; otherwise every g is tried, weighted by the
    chance the image would be labelled g under the noise model `noise` (default: `rule` itself)."""
    if given is not None:
        return (decide(probs, given, rule, margin) == labels).astype(float) - (given == labels)
    gains = np.zeros(len(labels))
    weights = label_chances(probs, labels, rule if noise is None else noise)
    for g in range(rule.shape[1]):
        as_g = np.full(len(labels), g)
        effect = (decide(probs, as_g, rule, margin) == labels).astype(float) - (g == labels)
        gains += weights[:, g] * effect
    return gains


def label_chances(probs: np.ndarray, labels: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """P(given = g | image, true label): each class's noise rate 1 - T[y, y], spread over the wrong classes in
    proportion to T[y, g] * p(g | image). People mislabel an image as a class it looks like, and those are the
    errors a model finds hardest to undo; spreading them by T alone would overstate what a rule can fix."""
    rows = np.arange(len(labels))
    wrong = transition[labels] * probs
    wrong[rows, labels] = 0.0
    wrong /= np.clip(wrong.sum(1, keepdims=True), 1e-12, None)
    stay = transition[labels, labels]
    chances = (1 - stay)[:, None] * wrong
    chances[rows, labels] = stay
    return chances


def candidate_transitions(em: np.ndarray, counts: np.ndarray, pairs: bool) -> dict[float, np.ndarray]:
    """The transitions a rule may use, by shrink: EM's estimate pulled halfway towards symmetric (the default) and
    EM's own, each blended with the in-place pairs when there are any."""
    shrunk = {weight: shrink_transition(em, weight) for weight in SHRINKS}
    return {weight: blend_transition(t, counts) if pairs else t for weight, t in shrunk.items()}


def choose_rule(probs: np.ndarray, labels: np.ndarray, transitions: dict[float, np.ndarray],
                given: np.ndarray | None = None, margins: tuple[float, ...] = MARGINS, small: bool = False,
                strict: bool = False) -> Decision:
    """The default transition's best margin (`best_margin`), replaced by another transition's only when that one
    gains more on the same holdout images under every noise model, with 95 % confidence (paired); change nothing
    when no rule is safe or the holdout is too small to tell: the evidence is too weak to correct. On a holdout of
    fewer than SMALL_HOLDOUT images (or when `small`) only the default transition and margins of at least
    SMALL_MIN_MARGIN compete; with `strict` (fewer than STRICT_VERIFIED verified images) every bound is 99 %."""
    if len(labels) < MIN_HOLDOUT:
        return Decision(math.inf, 0.0, 0.0, f"only {len(labels)} verified images are held out to check the corrections "
                                            f"(at least {MIN_HOLDOUT} are needed)")
    noises = [] if given is not None else list(transitions.values())
    small = small or len(labels) < SMALL_HOLDOUT
    if small:  # the conservative rules only: on 31 images EM's own transition at margin 0 passed the bound and cost 1.7 points
        margins = tuple(m for m in margins if m >= SMALL_MIN_MARGIN)
    z = Z_SMALL if small or strict else Z_ONE_SIDED
    chosen = best_margin(probs, labels, transitions, SHRINKS[0], noises, given, margins, z)
    for weight in [] if small else SHRINKS[1:]:
        other = best_margin(probs, labels, transitions, weight, noises, given, margins, z)
        if other is not None and (chosen is None or clearly_better(other, chosen)):
            chosen = other
    if chosen is None:
        accuracy = float((probs.argmax(1) == labels).mean())
        return Decision(math.inf, 0.0, 0.0, f"no rule beat the given labels on the {len(labels)} verified images it "
                                            f"was checked on (model accuracy there {accuracy:.0%})")
    return chosen


def best_margin(probs: np.ndarray, labels: np.ndarray, transitions: dict[float, np.ndarray], weight: float,
                noises: list[np.ndarray], given: np.ndarray | None, margins: tuple[float, ...],
                z: float = Z_ONE_SIDED) -> Decision | None:
    """Among the margins whose holdout gain is above zero with confidence `z` (one-sided; 99 % on small evidence,
    where a 95 % bound let a harmful rule through in our benchmarks) under every noise model
    in `noises` (the real given labels when there are in-place pairs), the one with the largest worst-case gain.
    With in-place pairs a margin must also change at least MIN_CHANGED_CHECKS of the checked images: 5 fixes and
    no break in 300 passed the bound and cost 0.3 points on the pool (benchmarks/RESULTS.md)."""
    best = None
    for margin in margins:
        gains = [holdout_gains(probs, labels, transitions[weight], margin, given, noise) for noise in noises or [None]]
        spread = [(float(g.mean()), float(g.std(ddof=1) / math.sqrt(len(g)))) for g in gains]
        mean, se = min(spread)
        seen = given is None or np.count_nonzero(gains[0]) >= MIN_CHANGED_CHECKS
        if seen and all(m - z * s > 0 for m, s in spread) and (best is None or mean > best.gain):
            best = Decision(margin, mean, se, "", weight, gains)
    return best


def clearly_better(other: Decision, chosen: Decision) -> bool:
    """`other` gains more than `chosen` image by image under every noise model, with 95 % confidence."""
    for mine, theirs in zip(other.gains, chosen.gains):
        diff = mine - theirs
        if diff.mean() - Z_ONE_SIDED * diff.std(ddof=1) / math.sqrt(len(diff)) <= 0:
            return False
    return True


def model_given_accuracy(em: np.ndarray, verified_labels: np.ndarray) -> float:
    """The given labels' accuracy under the EM transition, with the verified images' class prior."""
    return given_accuracy(em, np.bincount(verified_labels, minlength=em.shape[0]) / max(1, len(verified_labels)))


def labels_accuracy(counts: np.ndarray, pairs: bool, em: np.ndarray, verified_labels: np.ndarray) -> float:
    """The given labels' accuracy: the in-place pairs' agreement, else the EM transition's."""
    return float(np.trace(counts) / counts.sum()) if pairs else model_given_accuracy(em, verified_labels)


def model_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Argmax accuracy on the checked verified images (0 when there are none)."""
    return float((probs.argmax(1) == labels).mean()) if len(labels) else 0.0


def weaker_than_the_labels(accuracy: float, checked: int, estimate: float) -> Decision | None:
    """With few verified images, a model less accurate on them than the given labels are estimated to be does not
    overrule those labels: its noise estimate is as weak as it is (on 600 + 100 feature rows, a model 27-47 %
    accurate read 33-45 % noise where there was 9-17 %, and the guard's simulation, built on that estimate, passed
    rules that cost 2 to 10 points)."""
    if accuracy >= estimate:
        return None
    return Decision(math.inf, 0.0, 0.0, f"the model is {accuracy:.0%} accurate on the {checked} verified images it "
                                        f"was checked on, below the {estimate:.0%} it estimates for the given "
                                        f"labels; with fewer than {SMALL_VERIFIED} verified images that is too weak to "
                                        f"overrule them")


@dataclass
class Judgement:
    """The guarded posterior rule's labels and what the verified data say about them."""

    labels: np.ndarray
    confidence: np.ndarray
    distribution: np.ndarray
    transition: np.ndarray
    decision: Decision
    report: dict


def judge(probs: np.ndarray, given: np.ndarray, holdout_probs: np.ndarray, holdout_labels: np.ndarray,
          holdout_given: np.ndarray, verified_labels: np.ndarray, verified_given: np.ndarray, em: np.ndarray,
          cross_fitted: bool = False) -> Judgement:
    """Relabel the noisy pool only as far as the holdout shows it helps; estimate label accuracy before and after.

    `probs`/`holdout_probs`: calibrated class probabilities of the pool / the verified holdout; `*_given`: the
    labels those images carry in DATA; `verified_labels`: every verified image's verified label; `em`: the EM
    transition estimate from the pool; `cross_fitted`: the probabilities are out-of-fold (cross_fit.py)."""
    counts = pair_counts(verified_labels, verified_given, em.shape[0])
    pairs = in_place(counts)
    transitions = candidate_transitions(em, counts, pairs)
    small = len(verified_labels) < SMALL_VERIFIED
    estimate = labels_accuracy(counts, pairs, em, verified_labels)
    accuracy = model_accuracy(holdout_probs, holdout_labels)
    weak = weaker_than_the_labels(accuracy, len(holdout_labels), estimate) if small else None
    decision = weak or choose_rule(holdout_probs, holdout_labels, transitions, holdout_given if pairs else None,
                                   small=small, strict=len(verified_labels) < STRICT_VERIFIED)
    transition = transitions[decision.shrink]
    labels = given.copy() if math.isinf(decision.margin) else decide(probs, given, transition, decision.margin)
    dist = posterior(probs, given, transition)
    rows = np.arange(len(given))
    confidence = dist[rows, labels]
    pool_gain = float(np.mean(dist[rows, labels] - dist[rows, given])) if len(given) else 0.0
    report = accuracy_report(counts, pairs, em, verified_labels, decision, pool_gain, int(np.sum(labels != given)),
                             cross_fitted, accuracy if len(holdout_labels) else None)
    report["checked_on"] = len(holdout_labels)  # the verified images the decision was validated on
    return Judgement(labels, confidence, dist, transition, decision, report)


def accuracy_report(counts: np.ndarray, pairs: bool, em: np.ndarray, verified_labels: np.ndarray,
                    decision: Decision, pool_gain: float, changed: int, cross_fitted: bool = False,
                    checked_accuracy: float | None = None) -> dict:
    """Estimated label accuracy of the given and corrected labels, with 95 % intervals.

    Given: the in-place pairs' agreement (model-free), else the EM transition's diagonal (model-based; it reads
    too little noise where the model has memorised the given labels). Corrected: given plus the smaller of two
    gain estimates, the posterior's expected gain over the pool and the holdout's measured gain (each reads
    high in some of our benchmarks: an over-confident posterior, a holdout the model never memorised), its
    interval widened by the holdout gain's spread. A model far less accurate on the checked verified images
    (`checked_accuracy`) than the labels it estimates can misread their noise both ways (`too_far_below`): then the
    given interval reaches MODEL_OPTIMISM above the estimate and down to the model's own accuracy. Noise that
    follows the images' look (each wrong label the class a weak model confuses the image with) read 93 % where
    the labels were 60 %, from a model 44 % accurate (benchmarks/RESULTS.md)."""
    n = counts.sum()
    from_model = model_given_accuracy(em, verified_labels)
    too_weak = math.isinf(decision.margin)
    if pairs:
        given, (low, high) = labels_accuracy(counts, pairs, em, verified_labels), wilson(np.trace(counts), n)
        source = "verified images kept in place"
    elif too_weak:  # a model too weak to correct is too weak to measure the noise: say so, not a number
        return _unknown_accuracy(decision, from_model, changed)
    else:
        given, source = from_model, CROSS_FITTED_SOURCE if cross_fitted else MODEL_SOURCE
        low, high = wilson(given * n, n)
        low = max(0.0, min(low, given - MODEL_OPTIMISM))
        if too_far_below(checked_accuracy, given):  # errors it shares with the labellers read as agreement
            low, high = min(low, checked_accuracy), min(1.0, max(high, given + MODEL_OPTIMISM))
            source += (f"; the model is {checked_accuracy:.0%} accurate on the verified images it was checked on, far "
                       f"below these labels, and may misread their noise either way: the interval reaches from its "
                       f"own accuracy to {MODEL_OPTIMISM:.0%} above the estimate; verify a random sample in place "
                       f"for a figure")
    spread, gain = Z * decision.gain_se, min(pool_gain, decision.gain)
    corrected = {"estimate": min(1.0, given + gain), "low": max(0.0, low + gain - spread),
                 "high": min(1.0, high + gain + spread)}
    return {"given": {"estimate": given, "low": low, "high": high}, "corrected": corrected, "source": source,
            "noise_rate": 1 - given, "noise_rate_model": 1 - from_model,
            "noise_rate_pairs": 1 - given if pairs else None, "in_place_pairs": int(n) if pairs else 0,
            "margin": None if math.isinf(decision.margin) else decision.margin,
            "transition_shrink": None if math.isinf(decision.margin) else decision.shrink,
            "holdout_gain": decision.gain, "holdout_gain_se": decision.gain_se, "pool_expected_gain": pool_gain,
            "changed": changed,
            "too_weak": math.isinf(decision.margin), "reason": decision.reason}


def too_far_below(checked_accuracy: float | None, given: float) -> bool:
    """The model errs more often than the labels by more than MODEL_OPTIMISM: its noise estimate is then no longer
    only optimistic. On 3,000 + 300 images at 10 % symmetric noise (cross-fitted), a model 49 % accurate on the
    verified images read the labels as 78 % accurate where they were 90 % (benchmarks/RESULTS.md)."""
    return checked_accuracy is not None and given - checked_accuracy > MODEL_OPTIMISM


def _unknown_accuracy(decision: Decision, from_model: float, changed: int) -> dict:
    return {"given": None, "corrected": None, "noise_rate": None, "noise_rate_model": 1 - from_model,
            "noise_rate_pairs": None, "in_place_pairs": 0, "margin": None, "transition_shrink": None, "holdout_gain": 0.0, "holdout_gain_se": 0.0,
            "pool_expected_gain": 0.0, "changed": changed, "too_weak": True, "reason": decision.reason,
            "source": "unknown: the model is too weak to measure the noise; verified images kept in place "
                      "(in their given-label folder, right label in the manifest) would measure it directly"}
