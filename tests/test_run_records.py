"""Issue 17, the first hour, on a real (tiny) run: records that say what was run, a next-round command that can
be pasted, a run whose data moved, the run's log, --json and -q, output that reads well piped or at 80 columns,
and a dataset card that can go public."""
from __future__ import annotations

import html
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from tests.conftest import CLASSES, COLOURS, TINY, make_image, write_csv

runner = CliRunner()


def make_bench(base: Path) -> dict:
    """base/bench/data (3 classes x 12 images, a few filed wrongly, one unreadable), base/bench/clean.csv and a copy
    of the quick recipe in base/work/my.yaml."""
    rng = np.random.default_rng(1)
    data = base / "bench" / "data"
    clean = []
    for c, name in enumerate(CLASSES):
        for i in range(12):
            given = CLASSES[(c + 1) % 3] if i >= 9 else name
            (data / given).mkdir(parents=True, exist_ok=True)
            make_image(COLOURS[name], rng).save(data / given / f"{name}_{i}.png")
            if i < 4:
                clean.append((f"{given}/{name}_{i}.png", name))
    (data / "blue" / "broken.png").write_bytes(b"not an image")
    (base / "work").mkdir()
    assert runner.invoke(app, ["recipes", "copy", "quick", str(base / "work" / "my.yaml")]).exit_code == 0
    return {"base": base, "data": data, "clean": write_csv(base / "bench" / "clean.csv", clean)}


def clean_args(out: str, *extra: str) -> list[str]:
    """Relative paths, as a person types them in `base`."""
    return ["clean", "bench/data", "--clean", "bench/clean.csv", "--recipe", "work/my.yaml", "--out", out,
            "--device", "cpu", *TINY, *extra]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    base = tmp_path_factory.mktemp("first-hour")
    found = make_bench(base)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        result = runner.invoke(app, clean_args("runs/one", "train.finetune_epochs=1"))
    assert result.exit_code == 0, result.output
    return {**found, "run": base / "runs" / "one", "output": result.output, "stdout": result.stdout}


def test_summary_and_report_name_the_recipe_as_given(bench):
    summary = json.loads((bench["run"] / "summary.json").read_text())
    assert summary["recipe"].startswith("work/my.yaml (name: quick) + ")
    assert "train.epochs=8" in summary["recipe"]
    assert runner.invoke(app, ["review", str(bench["run"])]).exit_code == 0
    assert html.escape("work/my.yaml (name: quick)") in (bench["run"] / "review.html").read_text()


def test_summary_numbers_epochs_from_one_as_the_console(bench):
    summary = json.loads((bench["run"] / "summary.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == list(range(1, len(summary["epochs"]) + 1))
    assert "epoch 1 (warmup)" in bench["output"]
    runner.invoke(app, ["review", str(bench["run"])])
    assert "<tr><td>1</td><td>warmup</td>" in (bench["run"] / "review.html").read_text()


def test_a_report_of_an_older_run_still_numbers_epochs_from_one(bench, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(bench["run"], old)
    summary = json.loads((old / "summary.json").read_text())
    summary["epochs"] = [{**e, "epoch": e["epoch"] - 1} for e in summary["epochs"]]  # as runs before this release
    (old / "summary.json").write_text(json.dumps(summary))
    assert runner.invoke(app, ["review", str(old)]).exit_code == 0
    assert "<tr><td>1</td><td>warmup</td>" in (old / "review.html").read_text()


def test_the_reports_next_round_command_runs_as_pasted(bench, tmp_path, monkeypatch):
    assert runner.invoke(app, ["review", str(bench["run"])]).exit_code == 0
    page = (bench["run"] / "review.html").read_text()
    words = shlex.split(html.unescape(re.search(r'<code id="next-command">(.*?)</code>', page).group(1)))
    assert words[:3] == ["emlc", "clean", str(bench["data"])]
    assert str(bench["clean"]) in words and str(bench["base"] / "work" / "my.yaml") in words
    assert "train.epochs=8" in words and "train.finetune_epochs=1" in words
    assert words[words.index("decisions.csv") - 1] == "--clean"
    assert words[-2:] == ["--out", f"{bench['run']}-next"]
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    write_csv(elsewhere / "decisions.csv", [("green/blue_9.png", "blue")])  # a decision made in the report
    monkeypatch.chdir(elsewhere)
    pasted = runner.invoke(app, [*words[1:], "--dry-run"])
    assert pasted.exit_code == 0, pasted.output
    assert "would write" in pasted.output


def test_piped_output_is_not_hard_wrapped_and_lists_skipped_images(bench):
    assert re.search(r"held out for model selection\); inputs validated in \d", bench["output"])
    assert "blue/broken.png" in bench["output"] and "cannot" in bench["output"]


def test_run_folder_holds_its_log(bench):
    log = (bench["run"] / "emlc.log").read_text()
    assert f"command: emlc clean {bench['data']} --clean {bench['clean']}" in log
    assert "versions: emlc " in log and "torch " in log
    assert re.search(r"inputs: \d+ images, 3 classes", log)
    assert "epoch 1 (warmup): holdout accuracy" in log
    assert re.search(r"done in \d+s: \d+ of \d+ noisy labels changed.*blue/broken.png", log)


def test_the_log_records_warnings_and_why_a_run_stopped(tmp_path):
    import logging

    from emlc_cli.run_folder import log as runlog
    from emlc_cli.errors import Interrupted

    with pytest.raises(Interrupted):
        with runlog.recording(tmp_path, "emlc clean DATA --clean c.csv"):
            logging.getLogger("emlc_cli.pipeline").warning("class 'red' has no verified sample")
            raise Interrupted("stopped at epoch 2, step 3; run the same command with --resume to continue")
    log = (tmp_path / runlog.LOG_FILE).read_text()
    assert "command: emlc clean DATA --clean c.csv" in log
    assert "warning: class 'red' has no verified sample" in log
    assert "stopped: stopped at epoch 2, step 3" in log


def test_clean_json_and_quiet(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(bench["base"])
    as_json = runner.invoke(app, clean_args(str(tmp_path / "j"), "--json"))
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert summary["run"] == str(tmp_path / "j") and summary["images"] == 37
    quiet = runner.invoke(app, clean_args(str(tmp_path / "q"), "-q"))
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == f"{tmp_path / 'q'}\n"
    assert "epoch 1 (warmup): holdout accuracy" in (tmp_path / "q" / "emlc.log").read_text()  # quiet, yet logged


def test_evaluate_truth_says_what_it_measures_and_never_prints_nan(bench):
    shown = runner.invoke(app, ["evaluate", str(bench["run"]), "--truth", str(bench["clean"])])
    assert shown.exit_code == 0, shown.output
    assert "nan" not in shown.output and "n/a" in shown.output
    assert "precision: changed labels that were wrong" in shown.output
    assert "covers no row of the noisy pool" in shown.output
    as_json = runner.invoke(app, ["evaluate", str(bench["run"]), "--truth", str(bench["clean"]), "--json"])
    scored = json.loads(as_json.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert scored["noisy_given_accuracy"] is None and scored["noisy_rows"] == 0


@pytest.fixture
def moved(bench, tmp_path):
    """A copy of the run whose data folder is no longer where the run read it, and the data's new place."""
    run, data = tmp_path / "run", tmp_path / "new" / "data"
    shutil.copytree(bench["run"], run)
    shutil.copytree(bench["data"], data)
    source = json.loads((run / "source.json").read_text())
    source["root"] = source["location"] = str(tmp_path / "gone" / "data")
    (run / "source.json").write_text(json.dumps(source))
    return {"run": run, "data": data, "tmp": tmp_path}


def test_review_of_moved_data_warns_once_in_one_style_and_takes_data(moved):
    done = subprocess.run([sys.executable, "-m", "emlc_cli", "review", str(moved["run"])], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("warning: ") for line in lines), lines
    assert len(lines) == len(set(lines)) == 2 and "--data NEW_LOCATION" in lines[0], lines
    again = runner.invoke(app, ["review", str(moved["run"]), "--data", str(moved["data"])])
    assert again.exit_code == 0 and "warning" not in again.output, again.output
    assert str(moved["data"]) in html.unescape((moved["run"] / "review.html").read_text())


def test_export_and_push_of_moved_data_take_data(moved):
    for args in (["export", str(moved["run"]), str(moved["tmp"] / "exported")],
                 ["push", str(moved["run"]), "--to", str(moved["tmp"] / "pushed")]):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "--data NEW_LOCATION" in refused.output, refused.output
        assert "\n" not in refused.output.strip()
        done = runner.invoke(app, [*args, "--data", str(moved["data"])])
        assert done.exit_code == 0, done.output
    assert len(list((moved["tmp"] / "exported").rglob("*.png"))) == 36
    assert (moved["tmp"] / "pushed" / "README.md").is_file()


def test_the_dataset_card_is_public_and_takes_a_license_and_notes(bench, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("Colour swatches, relabelled for a test.\n\nCite: nobody (2026).\n")
    dest = tmp_path / "card"
    done = runner.invoke(app, ["push", str(bench["run"]), "--to", str(dest), "--license", "CC-BY-4.0",
                               "--card-notes", str(notes)])
    assert done.exit_code == 0, done.output
    card = (dest / "README.md").read_text()
    assert str(bench["base"]) not in card and "/bench/" not in card
    assert "The data of `data` (a local image folder)" in card
    assert "license: cc-by-4.0" in card and "size_categories:\n- n<1K" in card and "source_datasets:\n- original" in card
    assert "Colour swatches, relabelled for a test." in card and "Cite: nobody (2026)." in card
    assert "emlc clean data --clean clean.csv" in card and "--recipe my.yaml" in card


@pytest.mark.parametrize("flag, value, expected", [("--license", "MIT License", "--license 'MIT License'"),
                                                   ("--card-notes", "absent.md", "--card-notes: file not found")])
def test_bad_card_options_are_one_line_and_write_nothing(bench, tmp_path, flag, value, expected):
    dest = tmp_path / "card"
    done = runner.invoke(app, ["push", str(bench["run"]), "--to", str(dest), flag, str(tmp_path / value) if flag ==
                               "--card-notes" else value])
    assert done.exit_code == 2 and expected in done.output and "\n" not in done.output.strip(), done.output
    assert not dest.exists()
