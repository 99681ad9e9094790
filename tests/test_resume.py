"""Interruptions: SIGKILL or SIGTERM mid-run, then --resume, gives the same outputs as an uninterrupted run."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emlc_cli.errors import OutputError
from emlc_cli.run_folder.writer import load_training_state
from emlc_cli.run_folder.layout import STATE_FILE, staging_path
from tests.conftest import tiny

RESUME_RECIPE = tiny("train.epochs=6", "meta.warmup_epochs=1")


def clean_cmd(folder: dict, out: Path, *extra: str, seed: int = 3, clean: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "emlc_cli", "clean", str(folder["root"]), "--clean", str(clean or folder["clean"]),
            "--out", str(out), "--recipe", "quick", "--device", "cpu", "--quiet", "--seed", str(seed), *RESUME_RECIPE, *extra]


def run_to_end(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def interrupt(cmd: list[str], out: Path, sig: int, at: str = "2:1") -> int:
    """Start a run that pauses after step 1 of epoch 2 (its epoch-1 checkpoint saved; `at`: elsewhere) and send
    `sig` only once it says it is there: no timer decides where the signal lands."""
    paused = out.with_name(f"{out.name}.paused")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMLC_TEST_PAUSE_AT": at, "EMLC_TEST_PAUSE_FILE": str(paused)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused.exists(), f"the run never reached the pause point (exit {proc.poll()})"
    proc.send_signal(sig)
    proc.communicate(timeout=300)
    return proc.returncode


def outputs(out: Path) -> tuple[str, list]:
    summary = json.loads((out / "summary.json").read_text())
    return (out / "corrected.csv").read_text(), [round(e["score"], 6) for e in summary["epochs"]]


@pytest.fixture
def reference(noisy_folder):
    out = noisy_folder["tmp"] / "reference"
    done = run_to_end(clean_cmd(noisy_folder, out))
    assert done.returncode == 0, done.stderr
    return outputs(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_then_resumed_equals_uninterrupted(noisy_folder, reference, sig):
    out = noisy_folder["tmp"] / "interrupted"
    code = interrupt(clean_cmd(noisy_folder, out), out, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    assert not out.exists() and (staging_path(out) / STATE_FILE).is_file()
    refused = run_to_end(clean_cmd(noisy_folder, out))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_to_end(clean_cmd(noisy_folder, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(out) == reference
    assert not staging_path(out).exists()


@pytest.mark.slow
def test_a_torchrun_elastic_restart_resumes_by_itself(noisy_folder, reference):
    """torchrun --max-restarts starts the same command again with TORCHELASTIC_RESTART_COUNT > 0: it continues."""
    out = noisy_folder["tmp"] / "elastic"
    assert interrupt(clean_cmd(noisy_folder, out), out, signal.SIGKILL) == -signal.SIGKILL
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHELASTIC_RESTART_COUNT": "1"}
    restarted = subprocess.run(clean_cmd(noisy_folder, out), capture_output=True, text=True, timeout=600, env=env)
    assert restarted.returncode == 0, restarted.stderr
    assert outputs(out) == reference


@pytest.mark.slow
def test_a_stop_in_a_cross_fit_fold_keeps_the_folds_done_and_resumes_to_the_same_labels(noisy_folder):
    folds = ("correct.cross_fit=3",)
    reference = noisy_folder["tmp"] / "folds-reference"
    assert run_to_end(clean_cmd(noisy_folder, reference, *folds)).returncode == 0
    out = noisy_folder["tmp"] / "folds-stopped"
    assert interrupt(clean_cmd(noisy_folder, out, *folds), out, signal.SIGTERM, at="fold2:1:1") == 130
    state = load_training_state(staging_path(out) / STATE_FILE)
    assert list(state["folds"]) == [0] and not out.exists()
    resumed = run_to_end([a for a in clean_cmd(noisy_folder, out, *folds, "--resume") if a != "--quiet"])  # fold lines
    assert resumed.returncode == 0, resumed.stderr
    assert "cross-fit fold 1/3: scored" in resumed.stderr and "[kept from the interrupted run]" in resumed.stderr
    assert "cross-fit fold 2/3" in resumed.stderr and resumed.stderr.count("kept from the interrupted run") == 1
    assert outputs(out) == outputs(reference)


def test_resume_without_state_is_an_error(noisy_folder):
    done = run_to_end(clean_cmd(noisy_folder, noisy_folder["tmp"] / "never", "--resume"))
    assert done.returncode == 2 and "no interrupted run" in done.stderr


def test_pickled_state_is_refused(tmp_path):
    path = tmp_path / STATE_FILE
    torch.save({"x": argparse.Namespace(payload="arbitrary object")}, path)
    with pytest.raises(OutputError) as info:
        load_training_state(path)
    assert "refused" in info.value.one_line()


def test_nan_loss_stops_with_the_loss_and_step_named(noisy_folder, monkeypatch):
    from typer.testing import CliRunner

    from emlc_cli.train import meta
    from emlc_cli.cli.app import app

    monkeypatch.setattr(meta, "teacher_loss", lambda *args, **kwargs: torch.tensor(float("nan"), requires_grad=True))
    out = noisy_folder["tmp"] / "diverged"
    result = CliRunner().invoke(app, clean_cmd(noisy_folder, out)[3:])
    assert result.exit_code == 2, result.output
    assert "teacher loss became nan at epoch 2, step 1" in result.output and "Traceback" not in result.output
    assert not out.exists()
    state = load_training_state(staging_path(out) / STATE_FILE)
    assert state["trainer"]["epoch"] == 1  # the warm-up epoch's good state is kept


@pytest.fixture
def interrupted(noisy_folder):
    """A run stopped by SIGTERM after step 1 of epoch 2, its state saved for --resume."""
    out = noisy_folder["tmp"] / "stopped"
    assert interrupt(clean_cmd(noisy_folder, out), out, signal.SIGTERM) == 130
    return out


@pytest.mark.slow
def test_resume_refuses_changed_inputs(noisy_folder, interrupted, tmp_path):
    from tests.conftest import make_image, write_csv

    out, root = interrupted, noisy_folder["root"]
    fewer = write_csv(tmp_path / "fewer.csv", [tuple(r) for r in csv_rows(noisy_folder["clean"])[:-1]])
    before = (staging_path(out) / STATE_FILE).read_bytes()

    def refused(cmd: list[str], message: str) -> None:
        done = run_to_end([*cmd, "--resume"])
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (message, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1

    refused(clean_cmd(noisy_folder, out, seed=4), "--seed 4 differs from the interrupted run's 3")
    refused(clean_cmd(noisy_folder, out, "model.enhancer_hidden=32"), "the recipe changed since the run was interrupted "
                                                                      "(model.enhancer_hidden: ")
    refused(clean_cmd(noisy_folder, out, clean=fewer), "the verified set (--clean) changed")
    unverified = sorted(set(p.relative_to(root).as_posix() for p in root.rglob("*.png")) - {r[0] for r in csv_rows(noisy_folder["clean"])})
    (root / unverified[0]).unlink()
    refused(clean_cmd(noisy_folder, out), "the data (image list or given labels) changed")
    (root / "zebra").mkdir()
    for i in range(3):
        make_image((9, 9, 9), np.random.default_rng(i)).save(root / "zebra" / f"z{i}.png")
    refused(clean_cmd(noisy_folder, out), "the classes changed since the run was interrupted")
    assert (staging_path(out) / STATE_FILE).read_bytes() == before  # refused runs leave the state alone


def test_foreign_state_is_one_line(noisy_folder):
    out = noisy_folder["tmp"] / "foreign"
    staging_path(out).mkdir(parents=True)
    torch.save({}, staging_path(out) / STATE_FILE)
    done = run_to_end(clean_cmd(noisy_folder, out, "--resume"))
    assert done.returncode == 2 and "not an emlc training state (no valid 'trainer')" in done.stderr
    assert "Traceback" not in done.stderr


def csv_rows(path: Path) -> list[list[str]]:
    import csv

    with path.open() as handle:
        return list(csv.reader(handle))[1:]


def test_a_state_saved_before_a_recipe_key_existed_resumes_only_with_its_default():
    from emlc_cli.train import resume
    from emlc_cli.recipe.schema import load_recipe

    now = resume.fingerprint(["a.png"], np.array([0]), ["x"], {}, load_recipe("quick").to_dict(), 0)
    saved = {**now, "recipe": {s: dict(v) if isinstance(v, dict) else v for s, v in now["recipe"].items()}}
    del saved["recipe"]["train"]["teacher_momentum"]
    resume.check_same_inputs(saved, now)
    now["recipe"]["train"]["teacher_momentum"] = 0.5
    with pytest.raises(OutputError, match="train.teacher_momentum: None -> 0.5"):
        resume.check_same_inputs(saved, now)
