"""What the training loop yields: small reports the caller turns into progress output."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepReport:
    epoch: int
    epochs: int
    step: int
    steps: int
    phase: str
    student_loss: float
    teacher_loss: float
    images_per_s: float


@dataclass
class EpochReport:
    epoch: int
    phase: str
    student_holdout_acc: float
    teacher_holdout_acc: float
    score: float
    best: bool
    seconds: float


@dataclass
class FoldReport:
    """correct.cross_fit: one fold's models have trained and scored the noisy images they never saw."""

    fold: int     # 0-based
    folds: int
    rows: int
    seconds: float
    kept: bool = False  # its predictions were saved by an interrupted run and read back (--resume)


@dataclass
class EmbedReport:
    """A frozen backbone's embedding pass: `done` of `total` images, or all of them read back from the store."""

    done: int
    total: int
    images_per_s: float
    reused: bool = False  # the store held them: nothing embedded
