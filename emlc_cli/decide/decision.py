"""The decision stage: from the trained models to corrected labels. Every rank scores its share of the noisy
pool (with `correct.cross_fit`, trains its part of the fold models first: cross_fit.py); rank 0 calibrates,
applies the guarded rule (evidence.py, rules.py) and picks what to verify next."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from emlc_cli.decide import rules as corrections, evidence
from emlc_cli.train import cross_fit
from emlc_cli.runtime import distributed
from emlc_cli.cache.batches import TensorSet
from emlc_cli.recipe.schema import Recipe
from emlc_cli.train.trainer import MetaTrainer
from emlc_cli.prepare.verified import Prepared

Event = Callable[[Any], None]


@dataclass
class Result:
    labels: np.ndarray
    confidence: np.ndarray
    temperature: float
    to_verify: list[list[Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    probs: np.ndarray | None = None  # N x C, run_folder.PROBS_MEANING; NaN for skipped images
    cross_fit: int = 0  # folds whose out-of-fold predictions the decision read (0: the run's own student)
    cross_fit_reason: str | None = None  # with `correct.cross_fit: auto`: what it chose and why


def corrections_on_main(trainer: MetaTrainer, prepared: Prepared, images: torch.Tensor, noisy_idx: list[int],
                         recipe: Recipe, seed: int = 0, emit: Event = lambda event: None,
                         hooks: cross_fit.FoldHooks | None = None) -> Result:
    """Every rank scores its share of the noisy pool (or, with correct.cross_fit, trains its part of the fold
    models); rank 0 decides the corrections and hands the other ranks only what the fine-tune needs (labels,
    confidence), never the N x C probabilities."""
    given = prepared.dataset.labels[noisy_idx]
    pool = TensorSet(images, torch.from_numpy(given), torch.as_tensor(noisy_idx, dtype=torch.long))
    folds = cross_fit.folds_for(recipe.correct.cross_fit, len(noisy_idx))
    checked = trainer.holdout
    if folds:
        on_verified = recipe.correct.cross_fit_verified and len(trainer.clean) + len(trainer.holdout) >= folds
        if on_verified:
            checked = _joined(trainer.clean, trainer.holdout)
        preds, held = cross_fit.cross_fitted(lambda part, clean, k: _fold_trainer(trainer, part, clean, seed, k), pool,
                                             checked, folds, seed, emit, hooks, train_on_holdout=on_verified)
    else:
        preds, held = trainer.predict_to_main(pool), None
    decided: list[Result] = []

    def on_rank0() -> tuple[np.ndarray, np.ndarray, float]:
        decided.append(_corrections(trainer, prepared, preds, noisy_idx, recipe, held, checked))
        return decided[0].labels, decided[0].confidence, decided[0].temperature

    labels, confidence, temperature = distributed.on_main(on_rank0)
    result = decided[0] if decided else Result(labels, confidence, temperature)
    result.cross_fit = folds
    if recipe.correct.cross_fit == "auto":
        result.cross_fit_reason = cross_fit.auto_folds(len(noisy_idx))[1]
    return result


def _joined(first: TensorSet, second: TensorSet) -> TensorSet:
    return TensorSet(first.images, torch.cat([first.labels, second.labels]), torch.cat([first.rows, second.rows]))


def _fold_trainer(trainer: MetaTrainer, part: TensorSet, clean: TensorSet | None, seed: int, fold: int) -> MetaTrainer:
    """A fold's pair. Given its own verified images (`clean`), it has no holdout and keeps its last epoch: the
    images it will score are the only verified ones it did not train on."""
    holdout = trainer.holdout if clean is None else TensorSet(part.images, part.labels[:0], part.rows[:0])
    return MetaTrainer(trainer.recipe, trainer.num_classes, part, trainer.clean if clean is None else clean, holdout,
                       device=trainer.device, seed=cross_fit.fold_seed(seed, fold), preprocessing=trainer.preprocessing)


def _corrections(trainer: MetaTrainer, prepared: Prepared, preds: dict, noisy_idx: list[int], recipe: Recipe,
                 held: dict | None, checked: TensorSet) -> Result:
    """The decision from the noisy pool's predictions `preds`, checked on the verified images `checked` (the
    holdout unless the verified images were cross-fitted too) whose predictions are `held` when they are the
    cross-fitted ones; verified rows keep their verified label."""
    n = len(prepared.dataset)
    labels, confidence = prepared.dataset.labels.copy(), np.ones(n)
    for i, label in prepared.verified.items():
        labels[i] = label
    given = prepared.dataset.labels[noisy_idx]
    holdout = held if held is not None else trainer.predict(checked)
    holdout_log = np.log(trainer.source_probs(holdout) + 1e-12)
    temperature = corrections.fit_temperature(holdout_log, checked.labels.numpy())
    probs = corrections.softmax(np.log(trainer.source_probs(preds) + 1e-12) / temperature)
    holdout_probs = corrections.softmax(holdout_log / temperature)
    if recipe.correct.rule == "posterior":
        fixed, report = _guarded(prepared, probs, given, holdout_probs, checked.rows.tolist(), cross_fitted=held is not None)
    else:
        fixed, report = corrections.correct(probs, preds["retain"], given, recipe.correct), {}
    labels[noisy_idx], confidence[noisy_idx] = fixed.labels, fixed.confidence
    in_sample = {} if checked is not trainer.holdout else _calibrated(trainer, trainer.clean, temperature)
    known = {**dict(zip(noisy_idx, probs)), **dict(zip(checked.rows.tolist(), holdout_probs)), **in_sample}
    every = _every_row_probs(n, probs.shape[1], known)
    suggestions = corrections.verification_candidates(fixed, given, preds["retain"], preds["teacher_probs"], preds["student_probs"])
    names, paths = prepared.dataset.classes, prepared.dataset.paths
    rows = [[paths[noisy_idx[i]], names[given[i]], names[fixed.labels[i]], f"{fixed.confidence[i]:.4f}", reason, f"{score:.4f}"]
            for i, reason, score in suggestions]
    return Result(labels, confidence, temperature, rows, report, every)


def _calibrated(trainer: MetaTrainer, data: TensorSet, temperature: float) -> dict[int, np.ndarray]:
    """Row index -> calibrated class probabilities for the rows of `data`."""
    if len(data) == 0:
        return {}
    preds = trainer.predict(data)
    probs = corrections.softmax(np.log(trainer.source_probs(preds) + 1e-12) / temperature)
    return dict(zip(data.rows.tolist(), probs))


def _every_row_probs(n: int, classes: int, known: dict[int, np.ndarray]) -> np.ndarray:
    every = np.full((n, classes), np.nan, dtype=np.float32)
    for i, row in known.items():
        every[i] = row
    return every


def _guarded(prepared: Prepared, probs: np.ndarray, given: np.ndarray, holdout_probs: np.ndarray, checked: list[int],
             cross_fitted: bool = False) -> tuple[corrections.Corrections, dict]:
    """The posterior rule, validated on the verified images `checked` (see evidence.py): it changes nothing when
    they show no gain, and reports the estimated label accuracy before and after."""
    ds, verified = prepared.dataset, prepared.verified
    sampled = prepared.sampled  # pairs and class prior from the images that sample the noise
    ids = sampled or sorted(verified)
    verified_labels = np.array([verified[i] for i in ids], dtype=np.int64)
    # picked images only: their labels in DATA are no sample of the noise (emlc chose them as likely wrong)
    verified_given = ds.labels[ids] if sampled else verified_labels
    unsampled = prepared.unsampled
    kept = [k for k, i in enumerate(checked) if i not in unsampled]  # cross-fitted checks: all verified images
    holdout_probs, checked = holdout_probs[kept], [checked[k] for k in kept]
    held_labels = np.array([verified[i] for i in checked], dtype=np.int64)
    em = corrections.estimate_transition(probs, given, probs.shape[1])
    judged = evidence.judge(probs, given, holdout_probs, held_labels, ds.labels[checked], verified_labels,
                            verified_given, em, cross_fitted)
    if not sampled:  # the generic "only 0 verified images are held out" would not say why
        judged.report["reason"] = (f"all {len(verified)} verified images were picked by emlc (picked=1), so none is a "
                                   f"random sample to check a correction against")
        judged.report["all_picked"] = True
    return corrections.Corrections(judged.labels, judged.confidence, judged.distribution), judged.report
