"""Out-of-sample predictions for the decision (recipe key `correct.cross_fit`: the number of folds, 0 = off).

The student that trained on a noisy image has learned its given label: asked to judge that label, it agrees
too often, so its noise estimate reads low and wrong labels it memorised stay. Cross-fitting splits the noisy
pool into K folds and trains K more teacher/student pairs, each on the verified images and K - 1 folds; every
noisy image is then scored by the pair that never saw it. Each holdout image is scored by one fold's pair too
(assigned the same way), so that the decision is validated on predictions of the same kind as it is applied
to. With `correct.cross_fit_verified` (the default) the verified images are split into the same number of folds
as well: fold k's pair learns from the verified images outside verified fold k and scores those inside it, so
that every verified image, not only the holdout's tenth, checks the decision with a prediction made without it.
Those pairs keep their last epoch (no holdout of their own to pick one by: picking on the images they score would
flatter them). The run's own student (trained on the whole pool) is still the checkpoint and what the fine-tune
starts from; only the decision reads the fold predictions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from emlc_cli.runtime import distributed
from emlc_cli.cache.batches import TensorSet
from emlc_cli.train.events import FoldReport


# `correct.cross_fit: auto`: 5 folds for a noisy pool of AUTO_POOL[0] to AUTO_POOL[1] images, else none. The fold
# pairs cost about 4 more trainings; on 3k 32-px images that is minutes and gains (benchmarks/RESULTS.md, issue 32).
AUTO_FOLDS = 5
AUTO_POOL = (1_000, 5_000)


def folds_for(requested: int | str, rows: int) -> int:
    """The folds actually used: at most one per noisy row, and none (0) when fewer than 2 remain."""
    folds = min(auto_folds(rows)[0] if requested == "auto" else requested, rows)
    return folds if folds >= 2 else 0


def auto_folds(rows: int) -> tuple[int, str]:
    """What `correct.cross_fit: auto` chooses for a noisy pool of `rows` images, and why (for summary.json)."""
    low, high = AUTO_POOL
    if rows < low:
        return 0, f"auto: off, {rows:,} noisy images are under {low:,} (too few for fold models to beat the given labels)"
    if rows > high:
        return 0, f"auto: off, {rows:,} noisy images are over {high:,} (fold pairs would cost about {AUTO_FOLDS - 1}x the training)"
    return AUTO_FOLDS, (f"auto: {AUTO_FOLDS} folds, {rows:,} noisy images are {low:,}-{high:,} (each label judged by a model "
                        f"that never saw it; about {AUTO_FOLDS - 1}x the training, minutes at this size)")


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold `fold`'s models: their weights, shuffles and augmentation, whatever ran before them."""
    return seed + 1009 * (fold + 1)


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Each of n rows' fold, balanced (sizes differ by at most one) and shuffled by `seed`."""
    order = np.random.default_rng(seed).permutation(n)
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = np.arange(n) % folds
    return assignment


def subset(data: TensorSet, mask: np.ndarray) -> TensorSet:
    rows = torch.arange(len(data)) if data.rows is None else data.rows
    keep = torch.from_numpy(np.flatnonzero(mask))
    return TensorSet(data.images, data.labels[keep], rows[keep])


Parts = tuple[Optional[dict], Optional[dict]]  # one fold's predictions of its pool rows and its holdout rows


def _drain(trainer: Any, fold: int) -> None:
    for _ in trainer.run():
        pass


@dataclass
class FoldHooks:
    """What the pipeline adds around the folds: the folds an interrupted run finished (`done`: their predictions,
    meaningful on rank 0), `keep(fold, parts)` as each fold finishes (the pipeline saves it), and `train(trainer,
    fold)`, which runs a fold's trainer (the pipeline: under the stop signals)."""

    done: dict[int, Parts] = field(default_factory=dict)
    keep: Callable[[int, Parts], None] = lambda fold, parts: None
    train: Callable[[Any, int], None] = _drain


def cross_fitted(make_trainer: Callable[[TensorSet, Optional[TensorSet], int], Any], noisy: TensorSet, holdout: TensorSet,
                 folds: int, seed: int, emit: Callable[[Any], None] = lambda event: None,
                 hooks: Optional[FoldHooks] = None, train_on_holdout: bool = False) -> tuple[dict | None, dict | None]:
    """Out-of-fold predictions (the trainer's `predict` dicts) for the noisy pool and `holdout`, gathered on
    rank 0 (None on the other ranks). `make_trainer(train_set, clean_set, fold)` builds a fresh trainer on
    `train_set`; `clean_set` is None (the run's own verified training images) unless `train_on_holdout`, where it
    is the holdout rows outside the fold (`holdout` is then every verified image)."""
    hooks = hooks or FoldHooks()
    pool_fold, held_fold = fold_of(len(noisy), folds, seed), fold_of(len(holdout), folds, seed + 1)
    pool_parts, held_parts = [], []
    for k in range(folds):
        started, scored, held = time.perf_counter(), pool_fold == k, held_fold == k
        parts = hooks.done.get(k)
        if parts is not None and not _fits(parts, int(scored.sum()), int(held.sum())):
            parts = None  # not the rows of this fold: trained again
        kept = parts is not None
        if not kept:
            # the fold draws from its own generator and leaves the global one as it found it: a resumed run that
            # skips the folds done gives the same folds after them, and the same fine-tune, as an uninterrupted one
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(fold_seed(seed, k))
                trainer = make_trainer(subset(noisy, ~scored), subset(holdout, ~held) if train_on_holdout else None, k)
                hooks.train(trainer, k)
                parts = (trainer.predict_to_main(subset(noisy, scored)),
                         trainer.predict_to_main(subset(holdout, held)) if held.any() else None)
            hooks.keep(k, parts)
        pool_parts.append(parts[0])
        held_parts.append(parts[1])
        emit(FoldReport(k, folds, int(scored.sum()), time.perf_counter() - started, kept=kept))
    if not distributed.world().is_main:
        return None, None
    return _assemble(pool_parts, pool_fold), _assemble(held_parts, held_fold)


def _fits(parts: Parts, pool_rows: int, held_rows: int) -> bool:
    """Saved predictions that cover exactly this fold's rows (every array of a part has one row per row)."""
    return all(part is None and rows == 0 or part is not None and all(len(v) == rows for v in part.values())
               for part, rows in zip(parts, (pool_rows, held_rows)))


def _assemble(parts: list[dict | None], assignment: np.ndarray) -> dict | None:
    """Put each fold's rows back in the set's order (None for an empty set)."""
    present = next((p for p in parts if p is not None), None)
    if present is None:
        return None
    out = {key: np.zeros((len(assignment), *value.shape[1:]), dtype=value.dtype) for key, value in present.items()}
    for k, part in enumerate(parts):
        if part is None:
            continue
        where = np.flatnonzero(assignment == k)
        for key, value in part.items():
            out[key][where] = value
    return out
