"""Stopping and continuing: the training state saved after every epoch, on SIGTERM / Ctrl-C and after every
cross-fit fold (with the fold's predictions), and the signal handling that turns a stop request into a stop
after the current step. `--resume` continues from that state (pipeline.py checks its inputs, resume.py)."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from emlc_cli.train import cross_fit
from emlc_cli.errors import Interrupted
from emlc_cli.run_folder.writer import NoOutputs, RunDir
from emlc_cli.recipe.schema import Recipe
from emlc_cli.train.events import EpochReport, StepReport
from emlc_cli.train.trainer import MetaTrainer

log = logging.getLogger(__name__)
Event = Any


@dataclass
class Checkpoint:
    """The training state --resume continues from: saved after every epoch, on a stop, and after every cross-fit
    fold, with the predictions of the folds done (`folds`: fold -> its parts, as tensors)."""

    run: RunDir | NoOutputs
    trainer: MetaTrainer
    recipe: Recipe
    seed: int
    inputs: dict
    folds: dict[int, Any]

    def save(self) -> None:
        self.run.save_state({"trainer": self.trainer.training_state(), "recipe": self.recipe.to_dict(), "seed": self.seed,
                             "inputs": self.inputs, "folds": self.folds})

    def fold_hooks(self) -> cross_fit.FoldHooks:
        return cross_fit.FoldHooks({k: _as_arrays(parts) for k, parts in self.folds.items()}, self._keep, self._train_fold)

    def _keep(self, fold: int, parts: cross_fit.Parts) -> None:
        self.folds[fold] = _as_tensors(parts)
        self.save()

    def _train_fold(self, trainer: MetaTrainer, fold: int) -> None:
        with stop_on_signals(trainer):
            for report in trainer.run():
                pause_for_tests(report, trainer, f"fold{fold + 1}:")
        if trainer.stop_requested:
            self.save()
            raise Interrupted(f"stopped in cross-fit fold {fold + 1}; the training state and the {len(self.folds)} folds done "
                              f"are saved in {self.run.path}; run the same command with --resume to continue")


def _as_tensors(parts: cross_fit.Parts) -> list:
    return [None if part is None else {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in part.items()} for part in parts]


def _as_arrays(parts: Any) -> cross_fit.Parts:
    pool, held = parts
    return tuple(None if part is None else {k: v.numpy() for k, v in part.items()} for part in (pool, held))  # type: ignore[return-value]


def saved_folds(saved: dict | None) -> dict[int, Any]:
    """The folds an interrupted run finished (a state from before fold checkpoints has none); an entry that is not
    what Checkpoint saves is left out, and that fold is trained again."""
    folds = (saved or {}).get("folds") or {}
    return {k: v for k, v in folds.items() if _is_parts(k, v)} if isinstance(folds, dict) else {}


def _is_parts(fold: Any, parts: Any) -> bool:
    tensors = lambda part: part is None or (isinstance(part, dict) and all(isinstance(t, torch.Tensor) for t in part.values()))  # noqa: E731
    return isinstance(fold, int) and isinstance(parts, (list, tuple)) and len(parts) == 2 and all(map(tensors, parts))


def train(trainer: MetaTrainer, checkpoint: Checkpoint, emit: Event) -> float:
    """Run the trainer, saving the full state after every epoch and when SIGTERM / Ctrl-C asks to stop."""
    started = time.perf_counter()
    with stop_on_signals(trainer):
        for report in trainer.run():
            emit(report)
            pause_for_tests(report, trainer)
            if isinstance(report, EpochReport):
                with trainer.watch("checkpoints"):
                    checkpoint.save()
    if trainer.stop_requested:
        checkpoint.save()
        raise Interrupted(f"stopped at epoch {trainer.epoch + 1}, step {trainer.step}; the training state is saved in "
                          f"{checkpoint.run.path}; run the same command with --resume to continue")
    return time.perf_counter() - started


def pause_for_tests(report: object, trainer: MetaTrainer, where: str = "") -> None:
    """Tests only: with EMLC_TEST_PAUSE_AT=EPOCH:STEP (1-based; foldK:EPOCH:STEP in cross-fit fold K) the run creates
    the file EMLC_TEST_PAUSE_FILE (holding its process id) after that step and waits there for a stop signal, so a test interrupts it at a
    known point instead of racing a timer."""
    at = os.environ.get("EMLC_TEST_PAUSE_AT")
    if (not at or not isinstance(report, StepReport) or report.phase == "finetune"
            or f"{where}{report.epoch + 1}:{report.step}" != at):
        return
    paused = Path(os.environ["EMLC_TEST_PAUSE_FILE"])  # holds this process's id: under torchrun the test signals it
    paused.with_name(paused.name + ".tmp").write_text(str(os.getpid()))
    os.replace(paused.with_name(paused.name + ".tmp"), paused)
    deadline = time.monotonic() + 600
    while not trainer.stop_requested and time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def stop_on_signals(trainer: MetaTrainer) -> Iterator[None]:
    """SIGTERM or a first Ctrl-C asks the trainer to stop after the current step; a second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        log.warning("stopping after this step (signal %d); the training state will be saved", signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
