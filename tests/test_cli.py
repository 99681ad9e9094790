"""The CLI through typer's CliRunner: help, bad input, an end-to-end run on generated data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from tests.conftest import TINY

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["clean"], ["evaluate"], ["demo"], ["recipes"], ["recipes", "show"]])
def test_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_recipes_list_and_show():
    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0 and "quick" in listed.output
    shown = runner.invoke(app, ["recipes", "show", "quick"])
    assert "backbone: small_cnn" in shown.output


def test_recipes_copy(tmp_path):
    dest = tmp_path / "mine.yaml"
    assert runner.invoke(app, ["recipes", "copy", "quick", str(dest)]).exit_code == 0
    assert "backbone" in dest.read_text()
    again = runner.invoke(app, ["recipes", "copy", "quick", str(dest)])
    assert again.exit_code == 2 and "already exists" in again.output


def run_clean(folder: dict, out: Path, *extra: str):
    args = ["clean", str(folder["root"]), "--clean", str(folder["clean"]), "--out", str(out), "--recipe", "quick",
            "--device", "cpu", "--quiet", *TINY, *extra]
    return runner.invoke(app, args)


def test_clean_end_to_end_improves_labels(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    result = run_clean(noisy_folder, out, "train.finetune_epochs=1")
    assert result.exit_code == 0, result.output
    for name in ("corrected.csv", "student.safetensors", "student.json", "teacher.safetensors", "teacher.json",
                 "recipe.yaml", "summary.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["finetune_kept"] in (True, False)
    rows = (out / "corrected.csv").read_text().splitlines()
    assert rows[0] == "path,label,corrected_label,confidence,changed,split"
    paths = [r.split(",")[0] for r in rows[1:]]
    assert len(paths) == 120 and len(set(paths)) == 120 and paths == sorted(paths)
    scored = runner.invoke(app, ["evaluate", str(out), "--truth", str(noisy_folder["truth"]), "--json"])
    assert scored.exit_code == 0, scored.output
    metrics = json.loads(scored.output)
    assert metrics["corrected_accuracy"] > metrics["given_accuracy"] + 0.1
    assert metrics["f1"] > 0.5
    probs_go_to_cleanlab(out, noisy_folder["truth"])


def probs_go_to_cleanlab(run: Path, truth_csv: Path) -> None:
    """probs.npy is aligned with corrected.csv and is what cleanlab's pred_probs expects."""
    from cleanlab.filter import find_label_issues

    from emlc_cli.run_folder.layout import read_corrected, read_probs

    rows, probs = read_corrected(run), read_probs(run)
    classes = json.loads((run / "student.json").read_text())["classes"]
    assert probs.dtype == np.float32 and probs.shape == (len(rows), len(classes))
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    truth = dict(line.split(",") for line in truth_csv.read_text().splitlines()[1:])
    true = np.array([classes.index(truth[r["path"]]) for r in rows])
    assert (probs.argmax(1) == true).mean() > 0.8
    given = np.array([classes.index(r["label"]) for r in rows])
    flagged = find_label_issues(given, probs)
    assert flagged.shape == (len(rows),) and (given[flagged] != true[flagged]).mean() > 0.5


def test_checkpoint_loads_weights_only_and_reproduces_holdout(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    assert run_clean(noisy_folder, out).exit_code == 0
    state = load_file(str(out / "student.safetensors"))
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    config = json.loads((out / "student.json").read_text())
    assert config["classes"] == ["blue", "green", "red"] and config["input_size"] == 16
    summary = json.loads((out / "summary.json").read_text())
    reported = [e["student_holdout_acc"] for e in summary["epochs"] if e["best"]][-1]
    holdout = summary["holdout_paths"]
    assert holdout
    from emlc_cli.cache.decode import decode_images
    from emlc_cli.data.labeled import LabeledImages
    from emlc_cli.student.evaluation import load_student, predict_images

    model, _ = load_student(out, torch.device("cpu"))
    subset = LabeledImages(noisy_folder["root"], holdout, np.zeros(len(holdout), dtype=np.int64), config["classes"])
    images, _ = decode_images(subset, config["input_size"])
    truth = {p: c for p, c in (line.split(",") for line in noisy_folder["truth"].read_text().splitlines()[1:])}
    expected = np.array([config["classes"].index(truth[p]) for p in holdout])
    accuracy = float((predict_images(model, images, torch.device("cpu")) == expected).mean())
    assert abs(accuracy - reported) <= 1 / len(holdout) + 1e-9


def test_existing_out_is_refused(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    out.mkdir()
    result = run_clean(noisy_folder, out)
    assert result.exit_code == 2
    assert "already exists" in result.output and "Traceback" not in result.output


def test_bad_recipe_key_names_the_key(noisy_folder):
    result = run_clean(noisy_folder, noisy_folder["tmp"] / "run", "train.epocs=3")
    assert result.exit_code == 2
    assert "train.epocs" in result.output and "did you mean 'epochs'" in result.output
    assert not (noisy_folder["tmp"] / "run").exists()


def test_missing_data_folder(tmp_path):
    clean = tmp_path / "clean.csv"
    clean.write_text("path,label\na.png,x\n")
    result = runner.invoke(app, ["clean", str(tmp_path / "nope"), "--clean", str(clean), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "nope" in result.output and "not found" in result.output


def test_dry_run_prints_resolved_recipe_and_writes_nothing(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    result = run_clean(noisy_folder, out, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "width: 8" in result.output and "120 images" in result.output
    assert not out.exists()


def test_demo_set_is_consistent(tmp_path):
    from emlc_cli.data.demo import extract_demo
    from emlc_cli.data.imagefolder import load_image_folder

    root = extract_demo(tmp_path)
    train, test = load_image_folder(root / "train"), load_image_folder(root / "test")
    assert len(train) == 2200 and len(test) == 500 and train.classes == test.classes
    clean = (root / "clean.csv").read_text().splitlines()[1:]
    truth = dict(line.split(",") for line in (root / "truth.csv").read_text().splitlines()[1:])
    assert len(clean) == 200 and set(truth) == set(train.paths)
    given_right = sum(p.split("/")[0] == truth[p] for p in train.paths) - 200
    assert 0.55 < given_right / 2000 < 0.65


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--device", "cpu",
                                 "train.epochs=2", "meta.warmup_epochs=1", "train.max_steps_per_epoch=4"])
    assert result.exit_code == 0, result.output
    assert "label accuracy before" in result.output and "student test accuracy" in result.output
    assert (tmp_path / "demo" / "run" / "corrected.csv").is_file()
