"""Hostile inputs on the run folder's own paths (issue 30): the lock beside the staging folder, the staging folder
`--resume` continues in, and the training state it reads back. Each is one line naming the file (and the key),
exit 2; nothing outside --out is touched, a special file is never opened, a link never followed."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from emlc_cli.errors import OutputError
from emlc_cli.run_folder.locks import acquire_lock, release_lock
from emlc_cli.run_folder.layout import STATE_FILE, lock_path, staging_path
from tests.conftest import build_noisy_folder
from tests.test_hostile_inputs import assert_refused, in_thread, needs_fifo, tree_hash
from tests.test_resume import clean_cmd, interrupt

runner = CliRunner()


def resume(folder: dict, out: Path) -> Any:
    """`emlc clean ... --resume` in this process (a refusal comes before any training)."""
    return in_thread(lambda: runner.invoke(app, clean_cmd(folder, out, "--resume")[3:]))


def dry_run(folder: dict, out: Path) -> Any:
    return in_thread(lambda: runner.invoke(app, [*clean_cmd(folder, out)[3:], "--dry-run"]), timeout=30)


# --- the lock -----------------------------------------------------------------------------------------------

@needs_fifo
def test_a_fifo_at_the_lock_is_refused_never_opened(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    os.mkfifo(lock_path(out))
    assert_refused(dry_run(noisy_folder, out), str(lock_path(out)), "FIFO", "not emlc's lock file")
    assert lock_path(out).is_fifo() and not out.exists()


def test_a_lock_linked_to_an_endless_device_is_refused_never_read(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    os.symlink("/dev/zero", lock_path(out))
    assert_refused(dry_run(noisy_folder, out), str(lock_path(out)), "symbolic link")
    assert os.readlink(lock_path(out)) == "/dev/zero" and not out.exists()


def test_a_link_planted_at_the_locks_temporary_name_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    out = tmp_path / "run"
    planted = lock_path(out).with_name(f"{lock_path(out).name}.{os.getpid()}.tmp")
    os.symlink(victim, planted)
    lock = acquire_lock(out)
    release_lock(lock)
    assert victim.read_text() == "the user's file" and not lock.exists()


def test_a_lock_that_is_not_json_or_holds_an_absurd_pid_is_taken_over_only_if_emlcs(tmp_path):
    out = tmp_path / "run"
    lock_path(out).write_text('{"pid": 99999999999999999999}')  # emlc's shape, no live process: taken over
    release_lock(acquire_lock(out))
    lock_path(out).write_text("[" * 100_000)  # not emlc's: left alone
    with pytest.raises(OutputError, match="is not an emlc lock"):
        acquire_lock(out)
    assert lock_path(out).read_text() == "[" * 100_000


# --- the staging folder -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """A run stopped by SIGTERM after step 1 of epoch 2, its training state kept in `.stopped.partial`."""
    folder = build_noisy_folder(tmp_path_factory.mktemp("resumable"))
    out = folder["tmp"] / "stopped"
    assert interrupt(clean_cmd(folder, out), out, signal.SIGTERM) == 130
    return {**folder, "staged": staging_path(out)}


def copy_of_state(interrupted: dict, name: str) -> Path:
    """The interrupted run's staging folder copied as `.NAME.partial`; returns NAME's --out."""
    out = interrupted["tmp"] / name
    shutil.rmtree(staging_path(out), ignore_errors=True)
    shutil.copytree(interrupted["staged"], staging_path(out))
    return out


def test_resume_never_follows_a_symlinked_staging_folder(interrupted):
    other = copy_of_state(interrupted, "other-run")
    before = tree_hash(staging_path(other))
    out = interrupted["tmp"] / "mine"
    os.symlink(staging_path(other).name, staging_path(out))
    assert_refused(resume(interrupted, out), str(staging_path(out)), "symbolic link", "staging folder")
    assert tree_hash(staging_path(other)) == before, "the other run's state was touched"
    assert not os.path.lexists(out) and os.path.islink(staging_path(out))


@needs_fifo
def test_a_fifo_for_the_training_state_is_refused_never_opened(interrupted):
    out = interrupted["tmp"] / "fifo-state"
    staging_path(out).mkdir()
    os.mkfifo(staging_path(out) / STATE_FILE)
    assert_refused(resume(interrupted, out), STATE_FILE, "FIFO", "training state")


def test_a_symlinked_training_state_is_refused(interrupted):
    other = copy_of_state(interrupted, "state-owner")
    out = interrupted["tmp"] / "linked-state"
    staging_path(out).mkdir()
    os.symlink(staging_path(other) / STATE_FILE, staging_path(out) / STATE_FILE)
    assert_refused(resume(interrupted, out), STATE_FILE, "symbolic link")
    assert (staging_path(other) / STATE_FILE).is_file()


# --- the training state -------------------------------------------------------------------------------------

def _no_generators(t: dict) -> None:
    t["generator"] = []


def _far_row(t: dict) -> None:
    t["noisy_sampler"]["order"][-1] = 10**9  # a row the position has not reached: it would fail mid-epoch


def _foreign_best(t: dict) -> None:
    t["best_score"], t["best_state"] = 2.0, {"student": {"x": torch.zeros(3)}, "teacher": {}}


def _best_of_another_network(t: dict) -> None:
    t["best_score"] = 0.5
    t["best_state"] = {name: dict(weights) for name, weights in t["models"].items()}
    first = next(iter(t["best_state"]["student"]))
    t["best_state"]["student"][first] = torch.zeros(2, 2)


def _negative_epoch(t: dict) -> None:
    t["epoch"] = -40


def _repeated_row(t: dict) -> None:
    t["clean_sampler"]["order"][0] = t["clean_sampler"]["order"][1]


def _momentum_of_another_shape(t: dict) -> None:
    t["student_opt"]["state"][0]["momentum_buffer"] = torch.zeros(7)


def _torn_rng(t: dict) -> None:
    t["shuffle_generator"] = t["shuffle_generator"][:100]


def _history_of_strings(t: dict) -> None:
    t["history"][0]["score"] = "high"


TAMPERED: dict[str, tuple[Callable[[dict], None], str]] = {
    "no generators": (_no_generators, "'trainer.generator' must hold one generator state per process (1), got 0"),
    "a row 10**9": (_far_row, "'trainer.noisy_sampler.order' is not a shuffle of this run's"),
    "a foreign best state": (_foreign_best, "'trainer.best_score' is 2, outside 0..1"),
    "best weights of another shape": (_best_of_another_network, "'trainer.best_state.student."),
    "epoch -40": (_negative_epoch, "'trainer.epoch' is -40, outside 0..6"),
    "a repeated verified row": (_repeated_row, "'trainer.clean_sampler.order' is not a shuffle"),
    "a momentum of another shape": (_momentum_of_another_shape, "'trainer.student_opt.state.0.momentum_buffer'"),
    "a cut generator state": (_torn_rng, "'trainer.shuffle_generator' is not a generator state"),
    "a history of strings": (_history_of_strings, "'trainer.history.0.score' must be a number"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_training_state_is_refused_before_training(interrupted, case):
    tamper, message = TAMPERED[case]
    out = copy_of_state(interrupted, "tampered")
    path = staging_path(out) / STATE_FILE
    state = torch.load(path, weights_only=True)
    tamper(state["trainer"])
    torch.save(state, path)
    before = tree_hash(staging_path(out))
    assert_refused(resume(interrupted, out), str(path), message)
    assert tree_hash(staging_path(out)) == before and not out.exists()


def test_the_untouched_state_still_resumes(interrupted):
    out = copy_of_state(interrupted, "untouched")
    result = resume(interrupted, out)
    assert result.exit_code == 0, result.output
    assert (out / "corrected.csv").is_file() and not staging_path(out).exists()


# --- --out and the saved model --------------------------------------------------------------------------------

def test_a_dangling_link_at_out_is_refused_never_written_through(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    target = noisy_folder["tmp"] / "elsewhere"
    os.symlink(target, out)
    assert_refused(dry_run(noisy_folder, out), str(out), "symbolic link")
    assert os.readlink(out) == str(target) and not target.exists()


def test_a_student_config_nested_deep_is_one_line(noisy_folder):
    from tests.test_hostile_inputs import fake_student_run

    run = fake_student_run(noisy_folder["tmp"] / "run", sorted(os.listdir(noisy_folder["root"])))
    (run / "student.json").write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(noisy_folder["root"]), "--device", "cpu"])
    assert_refused(result, "student.json", "nested too deeply")
