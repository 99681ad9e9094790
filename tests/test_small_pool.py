"""MLP heads on a small noisy pool train on smaller batches (train/small_pool.py), and the run says so."""
from __future__ import annotations

import numpy as np
import pytest

import emlc_cli
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.train import small_pool


@pytest.mark.parametrize("rows, batch, clean", [(600, 37, 37), (3000, 187, 128), (100, 16, 16), (4095, 255, 128)])
def test_a_small_pool_fills_sixteen_batches(rows, batch, clean):
    recipe, why = small_pool.for_pool(load_recipe("frozen"), rows)
    assert (recipe.train.batch_size, recipe.train.clean_batch_size) == (batch, clean)
    assert why and f"{rows} noisy rows" in why and f"-> {batch}" in why
    assert ("train.clean_batch_size" in why) == (clean != 128)


@pytest.mark.parametrize("rows", [4096, 10_000, 1_000_000])
def test_a_large_pool_keeps_the_recipe(rows):
    recipe = load_recipe("frozen")
    assert small_pool.for_pool(recipe, rows) == (recipe, None)


def test_a_batch_already_small_is_kept():
    recipe = load_recipe("frozen", ["train.batch_size=16", "train.clean_batch_size=16"])
    assert small_pool.for_pool(recipe, 200) == (recipe, None)


def test_shrunk_batches_stay_divisible_across_processes_and_meta_steps():
    recipe, _ = small_pool.for_pool(load_recipe("frozen", ["meta.steps=2"]), 1000, processes=2)
    assert recipe.train.batch_size == 60 and recipe.train.batch_size % 4 == 0
    assert recipe.train.clean_batch_size == 60 and recipe.train.clean_batch_size % 2 == 0


def test_a_features_run_on_a_small_pool_says_which_batches_it_trained_on():
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(3), 100)
    features = np.eye(3)[true] + rng.normal(0, 0.3, (300, 3))
    given = np.where(rng.random(300) < 0.3, rng.integers(0, 3, 300), true)
    names = ["a", "b", "c"]
    verified = {i: names[true[i]] for i in range(0, 300, 6)}
    run = emlc_cli.clean(features, verified, labels=[names[g] for g in given], recipe="features", device="cpu",
                         overrides=["train.epochs=3", "meta.warmup_epochs=1", "correct.cross_fit=0"])
    note = run.summary["batch_note"]
    assert "train.batch_size 256 -> 16" in note and "250 noisy rows" in note
    assert run.summary["images_per_s"] > 0
