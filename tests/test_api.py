"""The Python API (emlc_cli.clean / evaluate / predict / load_run) on every input form, and `emlc predict`."""
from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import emlc_cli
from emlc_cli.cli.app import app
from emlc_cli.errors import DataError
from tests.conftest import CLASSES, COLOURS, TINY, make_image

runner = CliRunner()


def truth_of(folder: dict) -> dict[str, str]:
    return dict(line.split(",") for line in folder["truth"].read_text().splitlines()[1:])


def accuracy(keys, labels, truth) -> float:
    return float(np.mean([truth[k] == label for k, label in zip(keys, labels)]))


def test_clean_with_out_writes_the_run_and_load_run_reads_it(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    run = emlc_cli.clean(noisy_folder["root"], noisy_folder["clean"], overrides=TINY, out=out, device="cpu")
    assert run.path == out and (out / "probs.npy").is_file()
    again = emlc_cli.load_run(out)
    assert again.labels == run.labels and np.allclose(again.probs, run.probs)
    scores = emlc_cli.evaluate(out, truth=noisy_folder["truth"])
    assert scores["corrected_accuracy"] > scores["given_accuracy"]


def in_memory_dataset(folder: dict):
    import datasets
    rows = sorted(truth_of(folder))
    given = [path.split("/")[0] for path in rows]
    images = [str(folder["root"] / path) for path in rows]
    table = datasets.Dataset.from_dict({"image": images, "label": given}).cast_column("image", datasets.Image())
    return table, rows


def test_a_datasets_object_in_memory_with_a_mapping_of_verified_ids(noisy_folder):
    table, rows = in_memory_dataset(noisy_folder)
    truth = truth_of(noisy_folder)
    verified_paths = {line.split(",")[0] for line in noisy_folder["clean"].read_text().splitlines()[1:]}
    verified = {str(i): truth[path] for i, path in enumerate(rows) if path in verified_paths}
    run = emlc_cli.clean(table, verified, overrides=TINY, device="cpu")
    by_id = {str(i): truth[path] for i, path in enumerate(rows)}
    assert accuracy(run.rows, run.labels, by_id) > accuracy(run.rows, run.given, by_id) + 0.1


def test_a_dataframe_of_image_paths_with_a_dataframe_of_verified(noisy_folder):
    import pandas as pd
    rows = sorted(truth_of(noisy_folder))
    frame = pd.DataFrame({"image": [str(noisy_folder["root"] / p) for p in rows], "label": [p.split("/")[0] for p in rows]})
    truth = truth_of(noisy_folder)
    verified = pd.DataFrame({"id": [str(i) for i in range(0, 120, 4)], "label": [truth[rows[i]] for i in range(0, 120, 4)]})
    run = emlc_cli.clean(frame, verified, overrides=TINY, device="cpu", image_column="image")
    assert len(run.rows) == 120 and set(run.labels) <= set(CLASSES)
    assert run.summary["verified"] == 30


def colour_arrays(n_per_class: int = 40, noise: float = 0.3):
    rng = np.random.default_rng(1)
    images, true = [], []
    for c, name in enumerate(CLASSES):
        for _ in range(n_per_class):
            images.append(np.asarray(make_image(COLOURS[name], rng)))
            true.append(c)
    true = np.array(true)
    given = np.where(rng.random(len(true)) < noise, (true + rng.integers(1, 3, len(true))) % 3, true)
    return np.stack(images), true, given


def test_arrays_of_images_and_of_feature_vectors_with_labels():
    images, true, given = colour_arrays()
    names = [CLASSES[g] for g in given]
    verified = {i: CLASSES[true[i]] for i in range(0, len(true), 5)}
    run = emlc_cli.clean(images, verified, labels=names, overrides=TINY, device="cpu")
    order = [int(k) for k in run.rows]
    assert np.mean(run.probs.argmax(1) == true[order]) > 0.8  # rows, ids and labels stay aligned
    assert all(run.labels[j] == verified[i] for j, i in enumerate(order) if i in verified)
    assert np.mean([run.labels[j] == CLASSES[true[i]] for j, i in enumerate(order)]) > np.mean(given == true)
    features = images.reshape(len(images), -1, 3).mean(1) / 255 + np.random.default_rng(2).normal(0, 0.02, (len(images), 3))
    run = emlc_cli.clean(features, verified, labels=names, recipe="features", device="cpu",
                         overrides=["train.epochs=20", "meta.warmup_epochs=4"])
    order = [int(k) for k in run.rows]
    fixed = np.mean([run.labels[j] == CLASSES[true[i]] for j, i in enumerate(order)])
    assert fixed >= np.mean(given == true)


def test_unsupported_inputs_are_one_clear_error():
    with pytest.raises(DataError, match="neither N x D features nor"):
        emlc_cli.clean(np.zeros((4, 2, 2)), {0: "a"}, labels=["a"] * 4)
    with pytest.raises(DataError, match="labels= has 3 entries for 4 rows"):
        emlc_cli.clean(np.zeros((4, 2)), {0: "a"}, labels=["a"] * 3)
    with pytest.raises(DataError, match="not supported"):
        emlc_cli.clean(object(), {0: "a"})


def test_the_api_validates_inputs_as_the_cli_does_before_training(noisy_folder):
    """clean() goes through the CLI's preflight: an `out` that is an input, or a folder emlc did not write, is
    refused before anything is trained or written; a Recipe object with overrides is ambiguous."""
    from emlc_cli.errors import EmlcError, RecipeError
    from emlc_cli.recipe.schema import load_recipe

    clean_before = noisy_folder["clean"].read_bytes()
    with pytest.raises(EmlcError, match="clean.csv"):
        emlc_cli.clean(noisy_folder["root"], noisy_folder["clean"], out=noisy_folder["clean"], overrides=TINY,
                       device="cpu", overwrite=True)
    assert noisy_folder["clean"].read_bytes() == clean_before
    foreign = noisy_folder["tmp"] / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(EmlcError, match="not a folder emlc wrote"):
        emlc_cli.clean(noisy_folder["root"], noisy_folder["clean"], out=foreign, overrides=TINY, device="cpu",
                       overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(RecipeError, match="overrides apply to a recipe name or file"):
        emlc_cli.clean(noisy_folder["root"], noisy_folder["clean"], recipe=load_recipe("quick"), overrides=TINY)


def test_import_emlc_cli_does_not_import_torch():
    code = "import sys, emlc_cli; assert 'torch' not in sys.modules; emlc_cli.load_run; print(emlc_cli.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_predict_new_images_from_the_api_and_the_cli(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    assert runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--out", str(out),
                               "--recipe", "quick", "--device", "cpu", "--quiet", *TINY]).exit_code == 0
    new = noisy_folder["tmp"] / "new"  # a flat folder: no class folders, no labels
    new.mkdir()
    rng = np.random.default_rng(5)
    for i, name in enumerate(CLASSES * 4):
        make_image(COLOURS[name], rng).save(new / f"{i:02d}_{name}.png")
    predicted = emlc_cli.predict(out, new, device="cpu")
    assert predicted.probs.shape == (12, 3) and np.allclose(predicted.probs.sum(1), 1, atol=1e-5)
    assert np.mean([key.split("_")[1][:-4] == label for key, label in zip(predicted.keys, predicted.labels)]) > 0.8
    import datasets

    unlabelled = datasets.Dataset.from_dict({"image": [str(new / key) for key in predicted.keys]})
    from_memory = emlc_cli.predict(out, unlabelled.cast_column("image", datasets.Image()), device="cpu")
    assert from_memory.keys == [str(i) for i in range(12)] and from_memory.labels == predicted.labels
    target = noisy_folder["tmp"] / "preds.csv"
    result = runner.invoke(app, ["predict", str(out), str(new), "--out", str(target), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(target.open()))
    assert list(rows[0]) == ["key", "predicted_label", "confidence", "p_blue", "p_green", "p_red"]
    assert [r["predicted_label"] for r in rows] == predicted.labels
    again = runner.invoke(app, ["predict", str(out), str(new), "--out", str(target), "--device", "cpu"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(app, ["predict", str(out), str(new), "--out", str(target), "--overwrite", "--device", "cpu"]).exit_code == 0
    parquet = noisy_folder["tmp"] / "preds.parquet"
    assert runner.invoke(app, ["predict", str(out), str(new), "--out", str(parquet), "--device", "cpu"]).exit_code == 0
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).column("predicted_label").to_pylist() == predicted.labels
    printed = runner.invoke(app, ["predict", str(out), str(new), "--device", "cpu"])
    assert printed.exit_code == 0 and printed.output.splitlines()[0].startswith("key,predicted_label,confidence")


def test_predict_never_writes_into_the_data_or_over_a_file_it_did_not_write(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    emlc_cli.clean(noisy_folder["root"], noisy_folder["clean"], overrides=TINY, out=out, device="cpu")
    inside = runner.invoke(app, ["predict", str(out), str(noisy_folder["root"]), "--out", str(noisy_folder["root"] / "p.csv")])
    assert inside.exit_code == 2 and "lies inside the data" in inside.output
    assert not (noisy_folder["root"] / "p.csv").exists()
    mine = noisy_folder["tmp"] / "notes.csv"
    mine.write_text("my,own\nfile,here\n")
    refused = runner.invoke(app, ["predict", str(out), str(noisy_folder["root"]), "--out", str(mine), "--overwrite"])
    assert refused.exit_code == 2 and "not a predictions file emlc wrote" in refused.output
    assert mine.read_text() == "my,own\nfile,here\n"
