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

import pytest
import torch

from emlc_cli.errors import OutputError
from emlc_cli.outputs import STATE_FILE, load_training_state, staging_path
from tests.conftest import TINY

RESUME_RECIPE = [*TINY, "train.epochs=6", "meta.warmup_epochs=1"]


def clean_cmd(folder: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emlc_cli", "clean", str(folder["root"]), "--clean", str(folder["clean"]),
            "--out", str(out), "--recipe", "quick", "--device", "cpu", "--quiet", "--seed", "3", *RESUME_RECIPE, *extra]


def run_to_end(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def interrupt(cmd: list[str], out: Path, sig: int) -> int:
    """Start a run, wait for its first epoch checkpoint, then send `sig` a little later (mid-epoch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    state = staging_path(out) / STATE_FILE
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
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
    if code == 0:
        pytest.skip("the run finished before the signal arrived")
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    assert not out.exists() and (staging_path(out) / STATE_FILE).is_file()
    refused = run_to_end(clean_cmd(noisy_folder, out))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_to_end(clean_cmd(noisy_folder, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(out) == reference
    assert not staging_path(out).exists()


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

    from emlc_cli import meta
    from emlc_cli.cli.app import app

    monkeypatch.setattr(meta, "teacher_loss", lambda *args, **kwargs: torch.tensor(float("nan"), requires_grad=True))
    out = noisy_folder["tmp"] / "diverged"
    result = CliRunner().invoke(app, clean_cmd(noisy_folder, out)[3:])
    assert result.exit_code == 2, result.output
    assert "teacher loss became nan at epoch 2, step 1" in result.output and "Traceback" not in result.output
    assert not out.exists()
    state = load_training_state(staging_path(out) / STATE_FILE)
    assert state["trainer"]["epoch"] == 1  # the warm-up epoch's good state is kept
