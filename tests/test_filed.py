"""Verified images filed under their verified class, beside a manifest verified in place: only the in-place one
samples the noise. Counting the filed images as agreeing pairs would read the given labels as more accurate."""
from __future__ import annotations

import numpy as np

from emlc_cli.decide import decision
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.prepare.verified import filed_manifests, prepare
from tests.conftest import write_csv


def _groups(sizes_and_wrong: list[tuple[int, int]]) -> tuple[list[list[int]], dict[int, int], np.ndarray]:
    """Manifests of `n` images, `w` of them given a label other than the verified one (class 0 vs 1)."""
    groups, verified, labels, start = [], {}, [], 0
    for n, w in sizes_and_wrong:
        groups.append(list(range(start, start + n)))
        verified.update({i: 0 for i in groups[-1]})
        labels += [1] * w + [0] * (n - w)
        start += n
    return groups, verified, np.array(labels)


def test_an_agreeing_manifest_is_filed_only_when_an_in_place_sample_would_rarely_agree_so():
    assert filed_manifests(*_groups([(100, 40), (30, 0)])) == [1]  # 40 % noise: 30 agreeing images are no sample
    assert filed_manifests(*_groups([(100, 5), (10, 0)])) == []  # 5 % noise: 10 agreeing images are plausible
    assert filed_manifests(*_groups([(100, 5), (400, 0), (10, 0)])) == [1]
    assert filed_manifests(*_groups([(100, 0), (30, 0)])) == []  # nothing in place: every manifest is filed already
    assert filed_manifests(*_groups([(100, 40), (30, 1)])) == []  # a disagreement: in place too


def _mixed(noisy_folder) -> list:
    """clean.csv (18 images filed under their true class) and 12 wrongly filed images verified where they are."""
    rows = [line.split(",") for line in noisy_folder["truth"].read_text().splitlines()[1:]]
    wrong = [(path, label) for path, label in rows if path.split("/")[0] != label][:12]
    right = [(path, label) for path, label in rows if path.split("/")[0] == label and not path.endswith(
        ("_00.png", "_01.png", "_02.png", "_03.png", "_04.png", "_05.png"))][:28]
    return [noisy_folder["clean"], write_csv(noisy_folder["tmp"] / "sample.csv", wrong + right)]


def test_the_filed_manifest_trains_but_neither_measures_the_noise_nor_checks(noisy_folder):
    prepared = prepare(noisy_folder["root"], _mixed(noisy_folder), load_recipe("quick"))
    clean = {p for p in noisy_folder["clean"].read_text().splitlines()[1:]}
    assert {f"{prepared.dataset.paths[i]},{prepared.dataset.classes[prepared.verified[i]]}" for i in prepared.filed} == clean
    assert prepared.filed <= set(prepared.clean_train) and not prepared.filed & set(prepared.holdout)
    assert "18 filed under their verified class" in prepared.describe()
    assert any("clean.csv: all 18" in w and "correct 12 labels" in w for w in prepared.warnings)
    noisy = prepared.noisy
    probs = np.random.default_rng(0).dirichlet(np.ones(3), len(noisy)).astype(np.float32)
    held = np.eye(3, dtype=np.float32)[[prepared.verified[i] for i in prepared.holdout]] * 0.8 + 0.2 / 3
    _, report = decision._guarded(prepared, probs, prepared.dataset.labels[noisy], held, prepared.holdout)
    assert report["in_place_pairs"] == 40  # sample.csv's: 12 of 40 wrong, not 12 of 58
    assert abs(report["given"]["estimate"] - 28 / 40) < 1e-9
