"""Verified images emlc picked (to_verify.csv, the review report's decisions.csv: `picked=1`) train the teacher but
are no random sample: their (verified, given) pairs never measure the noise and they never check a decision."""
from __future__ import annotations

import numpy as np
import pytest

from emlc_cli.cli import console
from emlc_cli.decide import decision
from emlc_cli.errors import DataError
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.prepare.verified import prepare
from tests.conftest import write_csv


def _wrongly_filed(noisy_folder) -> list[tuple[str, str]]:
    """(path, true label) of the images filed under a wrong class: what a reviewer of emlc's suggestions fixes."""
    rows = [line.split(",") for line in noisy_folder["truth"].read_text().splitlines()[1:]]
    return [(path, label) for path, label in rows if path.split("/")[0] != label]


def _decisions(noisy_folder, picked: str | None) -> list:
    rows = _wrongly_filed(noisy_folder)[:12]
    if picked is None:
        return [write_csv(noisy_folder["tmp"] / "plain.csv", rows)]
    path = noisy_folder["tmp"] / "decisions.csv"
    path.write_text("path,label,picked\n" + "".join(f"{p},{label},{picked}\n" for p, label in rows))
    return [path]


def _judged(noisy_folder, extra: list) -> tuple:
    prepared = prepare(noisy_folder["root"], [noisy_folder["clean"], *extra], load_recipe("quick"))
    noisy = prepared.noisy
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), len(noisy)).astype(np.float32)
    checked = prepared.holdout
    held = np.eye(3, dtype=np.float32)[[prepared.verified[i] for i in checked]] * 0.8 + 0.2 / 3
    _, report = decision._guarded(prepared, probs, prepared.dataset.labels[noisy], held, checked)
    return prepared, report


def test_picked_rows_train_but_neither_check_nor_measure_the_noise(noisy_folder):
    prepared, report = _judged(noisy_folder, _decisions(noisy_folder, "1"))
    wrong = {path for path, _ in _wrongly_filed(noisy_folder)[:12]}
    assert {prepared.dataset.paths[i] for i in prepared.picked} == wrong
    assert prepared.picked <= set(prepared.verified) and not prepared.picked & set(prepared.holdout)
    assert "12 of them picked by emlc" in prepared.describe()
    assert report["in_place_pairs"] == 0 and report["source"].startswith(("model", "unknown"))


def test_the_same_rows_unmarked_count_as_a_random_sample_verified_in_place(noisy_folder):
    prepared, report = _judged(noisy_folder, _decisions(noisy_folder, None))
    assert not prepared.picked
    # the 12 disagreements read as noise; clean.csv's 18 agreeing images beside them read as filed (tests/test_filed.py)
    assert report["in_place_pairs"] == 12 and len(prepared.verified) == 18 + 12


def test_picked_0_is_a_random_row_and_a_bad_value_names_file_and_row(noisy_folder):
    prepared = prepare(noisy_folder["root"], [noisy_folder["clean"], *_decisions(noisy_folder, "0")], load_recipe("quick"))
    assert not prepared.picked
    with pytest.raises(DataError) as info:
        prepare(noisy_folder["root"], [noisy_folder["clean"], *_decisions(noisy_folder, "maybe")], load_recipe("quick"))
    assert "picked" in str(info.value) and "decisions.csv" in info.value.one_line() and "row 2" in info.value.one_line()


def test_a_run_whose_verified_images_were_all_picked_changes_nothing_and_says_why(noisy_folder):
    rows = [line.split(",") for line in noisy_folder["clean"].read_text().splitlines()[1:]]
    picked = noisy_folder["tmp"] / "picked_clean.csv"
    picked.write_text("path,label,picked\n" + "".join(f"{p},{label},1\n" for p, label in rows))
    prepared = prepare(noisy_folder["root"], [picked, *_decisions(noisy_folder, "1")], load_recipe("quick"))
    assert not prepared.sampled and not prepared.holdout
    probs = np.random.default_rng(0).dirichlet(np.ones(3), len(prepared.noisy)).astype(np.float32)
    given = prepared.dataset.labels[prepared.noisy]
    fixed, report = decision._guarded(prepared, probs, given, np.zeros((0, 3), dtype=np.float32), [])
    assert (fixed.labels == given).all() and report["too_weak"]
    assert report["reason"].startswith("all 30 verified images were picked by emlc (picked=1)")
    assert "Verify a random sample too" in console.too_weak_text(report)
