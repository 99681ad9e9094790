"""The only module that imports rich: progress, tables and the one-line error."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from emlc_cli.reports import EpochReport, StepReport
from emlc_cli.run_folder import TO_VERIFY

if TYPE_CHECKING:
    from emlc_cli.verified import Prepared

out = Console()
err = Console(stderr=True)


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


class TrainingProgress:
    """Feeds rich progress bars from the trainer's StepReport / EpochReport events."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> "TrainingProgress":
        if not self.quiet:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=err,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        if self.progress is None:
            return
        from emlc_cli.verified import Prepared  # loaded already by the pipeline that sends the events

        if isinstance(event, Prepared):
            self._prepared(event)
        elif isinstance(event, StepReport):
            self._step(event)
        elif isinstance(event, EpochReport):
            self._epoch(event)

    def _prepared(self, event: Prepared) -> None:
        ds = event.dataset
        err.print(f"{len(ds)} images, {len(ds.classes)} classes, {len(event.verified)} verified "
                  f"({len(event.holdout)} held out for model selection); inputs validated in {event.seconds:.1f}s")
        for message in event.warnings:
            warning(message)

    def _epoch(self, event: EpochReport) -> None:
        assert self.progress is not None
        best = " [green]best[/]" if event.best else ""
        self.progress.console.print(
            f"epoch {event.epoch + 1} ({event.phase}): holdout accuracy student {event.student_holdout_acc:.3f}, "
            f"teacher {event.teacher_holdout_acc:.3f}{best}  [{event.seconds:.0f}s]")

    def _step(self, r: StepReport) -> None:
        assert self.progress is not None
        description = f"epoch {r.epoch + 1}/{r.epochs} {r.phase}"
        stats = f"student {r.student_loss:.3f}" + (f" teacher {r.teacher_loss:.3f}" if r.phase == "meta" else "")
        stats += f" {r.images_per_s:.0f} img/s"
        if r.step == 1 or self.task is None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(description, total=r.steps, stats=stats)
        self.progress.update(self.task, completed=r.step, stats=stats, description=description)


def clean_summary(summary: dict[str, Any], out_dir: str) -> None:
    table = Table(title="emlc clean", show_header=False)
    table.add_row("images", f"{summary['images']} ({summary['noisy']} noisy, {summary['verified']} verified)")
    share = summary["changed"] / max(1, summary["noisy"])
    table.add_row("labels changed", f"{summary['changed']} ({share:.1%} of the noisy pool)")
    estimate = summary.get("label_accuracy")
    if estimate:
        table.add_row("label accuracy (estimated)", label_accuracy_text(estimate))
    table.add_row("best holdout accuracy", f"{summary['best_holdout_score']:.3f}")
    if summary.get("skipped"):
        table.add_row("unreadable images skipped", str(len(summary["skipped"])))
    table.add_row("training", f"{summary['train_seconds']:.0f}s, {summary['images_per_s']:.0f} img/s on {summary['device']}")
    table.add_row("run folder", out_dir)
    out.print(table)
    if estimate and estimate.get("too_weak"):
        warning(too_weak_text(estimate))


def label_accuracy_text(estimate: dict[str, Any]) -> str:
    given, fixed = estimate["given"], estimate["corrected"]
    if given is None or fixed is None:
        return estimate["source"]
    return (f"given {given['estimate']:.1%} ({given['low']:.1%}-{given['high']:.1%}), corrected {fixed['estimate']:.1%} "
            f"({fixed['low']:.1%}-{fixed['high']:.1%}); from {estimate['source']}")


def too_weak_text(estimate: dict[str, Any]) -> str:
    return (f"the evidence is too weak to correct: {estimate['reason']}; {estimate['changed']} labels changed. "
            f"Verify more images (start with {TO_VERIFY}) and pass them as another --clean")


def metrics_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


def per_class_table(classes: list[str], rows: list[dict[str, float]]) -> None:
    table = Table("class", "precision", "recall", "support")
    for name, row in zip(classes, rows):
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", str(row["support"]))
    out.print(table)


def text(message: str) -> None:
    out.print(message, highlight=False, soft_wrap=True)
