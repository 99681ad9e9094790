"""The cleanlab hand-off: labels.npy / Run.given_index are the given labels as ints in student.json's class order,
the columns of probs.npy, so cleanlab's Datalab (which sorts *string* labels by name) reads them as emlc meant."""
from __future__ import annotations

import json

import numpy as np
import pytest

import emlc_cli
from emlc_cli.run_folder import layout as run_folder
from tests.conftest import TINY, make_image

NAMES = ["dog", "cat"]  # a ClassLabel order that is not alphabetical
COLOURS = {"dog": (30, 60, 220), "cat": (220, 40, 40)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import datasets

    tmp = tmp_path_factory.mktemp("cleanlab")
    rng = np.random.default_rng(0)
    truth = [i % 2 for i in range(80)]
    given = [t if i < 12 or rng.random() > 0.25 else 1 - t for i, t in enumerate(truth)]
    images = [make_image(COLOURS[NAMES[t]], rng) for t in truth]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    datasets.Dataset.from_dict({"image": images, "label": given}, features=features).save_to_disk(str(tmp / "saved"))
    verified = {str(i): NAMES[truth[i]] for i in range(12)}
    return emlc_cli.clean(str(tmp / "saved"), verified, overrides=TINY, device="cpu", out=tmp / "run"), given


def test_labels_npy_and_given_index_are_the_given_labels_in_student_json_order(run):
    result, given = run
    classes = json.loads((result.path / "student.json").read_text())["classes"]
    assert classes == NAMES == result.classes
    on_disk = np.load(result.path / run_folder.LABELS, allow_pickle=False)
    assert on_disk.dtype == np.int64 and on_disk.tolist() == result.given_index.tolist()
    by_row = {row: given[int(row)] for row in result.rows}  # rows are ids sorted as corrected.csv sorts them
    assert on_disk.tolist() == [by_row[row] for row in result.rows]
    assert result.labels_index.tolist() == [NAMES.index(label) for label in result.labels]


def test_cleanlab_datalab_with_the_int_labels_agrees_with_probs(run):
    from cleanlab import Datalab

    result, _ = run
    probs = np.load(result.path / "probs.npy")
    lab = Datalab(data={"label": np.load(result.path / "labels.npy")}, label_name="label", verbosity=0)
    lab.find_issues(pred_probs=probs, issue_types={"label": {}})
    issues = lab.get_issues("label")
    assert issues["predicted_label"].tolist() == probs.argmax(1).tolist()
    assert issues["given_label"].tolist() == result.given_index.tolist()
