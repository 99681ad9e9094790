"""correct.cross_fit: every noisy image is judged by models that never trained on it."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from emlc_cli.train.cross_fit import auto_folds, cross_fitted, fold_of, folds_for
from emlc_cli.cache.batches import TensorSet
from emlc_cli.recipe.schema import RecipeError, load_recipe
from emlc_cli.train.events import FoldReport


def test_folds_are_balanced_and_follow_the_seed():
    folds = fold_of(103, 5, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [20, 20, 21, 21, 21]
    assert (fold_of(103, 5, seed=3) == folds).all() and not (fold_of(103, 5, seed=4) == folds).all()


class RecordingTrainer:
    """Trains on nothing; predicts, for each row, the set of cache rows it was trained on (as a mask)."""

    def __init__(self, train: TensorSet, size: int) -> None:
        self.trained_on = set(train.rows.tolist())
        self.size = size

    def run(self):
        yield from ()

    def predict_to_main(self, data: TensorSet) -> dict:
        mask = np.zeros((len(data), self.size), dtype=np.float32)
        mask[:, sorted(self.trained_on)] = 1
        return {"student_probs": mask, "row": data.rows.numpy().astype(np.float32)[:, None]}


def test_each_row_is_predicted_by_the_fold_model_that_did_not_train_on_it():
    images = torch.zeros(40, 3)
    pool = TensorSet(images, torch.zeros(30, dtype=torch.long), torch.arange(10, 40))
    holdout = TensorSet(images, torch.zeros(7, dtype=torch.long), torch.arange(0, 7))
    built, events = [], []

    def make(train: TensorSet, clean: TensorSet | None, fold: int) -> RecordingTrainer:
        assert clean is None  # the run's own verified training images
        built.append(fold)
        return RecordingTrainer(train, 40)

    preds, held = cross_fitted(make, pool, holdout, 3, seed=0, emit=events.append)
    assert built == [0, 1, 2] and [e.fold for e in events] == [0, 1, 2] and isinstance(events[0], FoldReport)
    assert sum(e.rows for e in events) == 30
    rows = preds["row"][:, 0].astype(int)
    assert (rows == np.arange(10, 40)).all()  # back in the pool's order
    for i, row in enumerate(rows):
        assert preds["student_probs"][i, row] == 0  # its model never saw it
        assert preds["student_probs"][i].sum() == 20  # ... and saw the other two folds
    assert (held["row"][:, 0].astype(int) == np.arange(7)).all()


def test_with_the_verified_images_folded_each_is_scored_by_a_model_that_never_trained_on_it():
    images = torch.zeros(40, 3)
    pool = TensorSet(images, torch.zeros(30, dtype=torch.long), torch.arange(10, 40))
    verified = TensorSet(images, torch.zeros(10, dtype=torch.long), torch.arange(0, 10))
    cleans = []

    def make(train: TensorSet, clean: TensorSet, fold: int) -> RecordingTrainer:
        cleans.append(clean.rows.tolist())
        return RecordingTrainer(TensorSet(images, train.labels, torch.cat([train.rows, clean.rows])), 40)

    preds, held = cross_fitted(make, pool, verified, 3, seed=0, train_on_holdout=True)
    assert sorted(len(rows) for rows in cleans) == [6, 7, 7]  # each fold learns from the other two verified folds
    assert sorted(r for rows in cleans for r in rows) == sorted(2 * list(range(10)))
    rows = held["row"][:, 0].astype(int)
    assert (rows == np.arange(10)).all()
    for i, row in enumerate(rows):
        assert held["student_probs"][i, row] == 0  # its model never saw it, as a verified image or otherwise
        assert set(np.flatnonzero(held["student_probs"][i, :10])) == set(next(c for c in cleans if row not in c))


def test_a_pool_too_small_for_its_folds_gets_fewer_or_none():
    assert [folds_for(5, rows) for rows in (100, 5, 3, 1, 0)] == [5, 5, 3, 0, 0]
    assert folds_for(0, 100) == 0


def test_a_features_run_with_a_single_noisy_image_is_not_cross_fitted():
    from emlc_cli import api

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 21)
    x = (np.eye(3)[truth] * 3 + rng.normal(0, 1, (21, 3))).astype(np.float32)
    run = api.clean(x, {str(i): f"c{truth[i]}" for i in range(20)}, recipe="features", labels=[f"c{t}" for t in truth],
                    device="cpu", overrides=["train.epochs=4"])
    assert run.summary["cross_fit"] == 0 and run.summary["noisy"] == 1


def test_an_empty_holdout_gives_no_holdout_predictions():
    images = torch.zeros(12, 3)
    pool = TensorSet(images, torch.zeros(12, dtype=torch.long), torch.arange(12))
    empty = TensorSet(images, torch.zeros(0, dtype=torch.long), torch.arange(0))
    preds, held = cross_fitted(lambda train, clean, k: RecordingTrainer(train, 12), pool, empty, 2, seed=0)
    assert held is None and preds["row"].shape == (12, 1)


@pytest.mark.parametrize("value, message", [(1, "0 (off) or 2 or more folds"), (21, "[0, 20]")])
def test_cross_fit_folds_are_validated(value, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe("features", [f"correct.cross_fit={value}"])


@pytest.mark.parametrize("value, message", [("fast", "expected an int or auto, got str ('fast')"), (-1, "[0, 20]")])
def test_cross_fit_takes_folds_or_auto(value, message):
    assert load_recipe("features", ["correct.cross_fit=auto"]).correct.cross_fit == "auto"
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe("features", [f"correct.cross_fit={value}"])


@pytest.mark.parametrize("rows, folds", [(999, 0), (1000, 5), (5000, 5), (5001, 0)])
def test_auto_cross_fits_only_a_small_pool(rows, folds):
    assert folds_for("auto", rows) == folds
    assert auto_folds(rows)[1].startswith(f"auto: {folds} folds" if folds else "auto: off")


@pytest.mark.parametrize("verified, folds, why", [(300, 5, "1,000 noisy images are 1,000-5,000"),
                                                  (301, 0, "999 noisy images are under 1,000")])
def test_auto_cross_fit_is_chosen_from_the_pool_and_reported(verified, folds, why):
    from emlc_cli import api

    features, truth, given = _overlapping_clusters(n=1300)
    labels = [f"c{truth[i] if i < verified else g}" for i, g in enumerate(given)]
    events: list = []
    run = api.clean(features, {str(i): f"c{truth[i]}" for i in range(verified)}, recipe="features", labels=labels,
                    device="cpu", progress=events.append, overrides=["train.epochs=3", "meta.warmup_epochs=1", "correct.cross_fit=auto"])
    assert run.summary["cross_fit"] == folds and why in run.summary["cross_fit_reason"]
    assert len([e for e in events if isinstance(e, FoldReport)]) == folds


def _overlapping_clusters(n: int = 1200, classes: int = 5, noise: float = 0.3, seed: int = 0):
    """Gaussian classes in 256 dimensions that overlap (no model is perfect; the MLP can memorise every row) with
    `noise` of the labels flipped at random."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    centres = rng.normal(0, 1.0, (classes, 256))
    features = (centres[truth] + rng.normal(0, 9.0, (n, 256))).astype(np.float32)
    given = truth.copy()
    flip = rng.random(n) < noise
    given[flip] = (truth[flip] + rng.integers(1, classes, flip.sum())) % classes
    return features, truth, given


def test_cross_fitted_predictions_measure_the_noise_the_memorising_student_hides():
    from emlc_cli import api

    features, truth, given = _overlapping_clusters()
    verified = {str(i): f"c{truth[i]}" for i in range(300)}
    labels = [f"c{truth[i] if i < 300 else g}" for i, g in enumerate(given)]  # verified images filed under their class
    rates = {}
    events: list = []
    for folds in (0, 3):
        run = api.clean(features, verified, recipe="features", labels=labels, device="cpu", progress=events.append,
                        overrides=["train.epochs=40", f"correct.cross_fit={folds}"])
        rates[folds] = run.summary["label_accuracy"]["noise_rate_model"]
        assert run.summary["cross_fit"] == folds
        # checked on the holdout's tenth alone, or, cross-fitted, on every verified image
        assert run.summary["label_accuracy"]["checked_on"] == (300 if folds else run.summary["holdout"])
    true_rate = float((given[300:] != truth[300:]).mean())
    assert rates[0] < true_rate - 0.05  # the student that trained on the labels agrees with them
    assert abs(rates[3] - true_rate) < abs(rates[0] - true_rate) - 0.03
    assert [e.fold for e in events if isinstance(e, FoldReport)] == [0, 1, 2]


def test_the_demo_stays_a_single_run():
    """`quick` cross-fits 1,000-5,000 noisy images by itself; the demo's 2,000 would take four times its minute."""
    from emlc_cli.data.demo import DEMO_OVERRIDES, DEMO_RECIPE

    assert load_recipe(DEMO_RECIPE, list(DEMO_OVERRIDES)).correct.cross_fit == 0
