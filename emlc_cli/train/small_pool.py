"""Batch sizes for MLP heads on a small noisy pool.

Heads over cached features (the `frozen` and `features` recipes) take their batch size from the recipe, sized for
10k rows and more. On a few hundred rows a batch of 256 is one or two steps an epoch, and the heads end their
epochs undertrained: on 600 + 100 CIFAR images the frozen path's fold models were 35 % accurate on the verified
images where batches of 32 made them 59-61 %, and 40 % symmetric noise went from 0 changes to +9.5 points
(benchmarks/RESULTS.md). So a pool that fills fewer than MIN_BATCHES batches trains on smaller ones; on 3,000
rows (batch 187 instead of 256) the labels came out the same to 0.1 point."""
from __future__ import annotations

import dataclasses

from emlc_cli.recipe.schema import Recipe

MIN_BATCHES = 16  # batches per epoch a head trains on at the least, where the pool allows it
MIN_BATCH = 16    # never smaller than this


def for_pool(recipe: Recipe, noisy_rows: int, processes: int = 1) -> tuple[Recipe, str | None]:
    """`recipe` with train.batch_size (and clean_batch_size) shrunk so that `noisy_rows` fill MIN_BATCHES batches,
    kept divisible as the trainer needs (processes x meta.steps; the verified batch by processes), and why; the
    recipe unchanged (and None) when the pool is large enough or the batch is already small."""
    t = recipe.train
    unit = processes * recipe.meta.steps
    batch = max(MIN_BATCH, noisy_rows // MIN_BATCHES) // unit * unit
    if batch >= t.batch_size or batch < unit:
        return recipe, None
    clean = max(2 * processes, min(t.clean_batch_size, batch) // processes * processes)
    train = dataclasses.replace(t, batch_size=batch, clean_batch_size=min(clean, t.clean_batch_size))
    verified = (f" and train.clean_batch_size {t.clean_batch_size} -> {train.clean_batch_size}"
                if train.clean_batch_size != t.clean_batch_size else "")
    why = (f"train.batch_size {t.batch_size} -> {batch}{verified}: {noisy_rows} noisy rows fill fewer than "
           f"{MIN_BATCHES} batches of {t.batch_size}, too few steps for the heads to learn")
    return dataclasses.replace(recipe, train=train), why
