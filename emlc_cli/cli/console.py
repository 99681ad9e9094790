"""The only module that imports rich: progress, tables, the one-line error, and log records in the same style.

Prose is printed soft-wrapped (never hard-wrapped at 80 columns when piped), and without rich markup in what it
prints, so a path or message with brackets shows as written. What a run's console shows is also sent to the
transcript logger, which the run's log file (run_folder/log.py) records."""
from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from emlc_cli.train.events import EmbedReport, EpochReport, FoldReport, StepReport
from emlc_cli.run_folder.layout import TO_VERIFY
from emlc_cli.run_folder.log import transcript
from emlc_cli.runtime.device import rank_prefix

if TYPE_CHECKING:
    from emlc_cli.prepare.verified import Prepared

out = Console()
err = Console(stderr=True)
SKIPPED_SHOWN = 3  # unreadable images named in the summary (summary.json lists them all)


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    transcript().info(f"error: {message}")


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    transcript().info(f"warning: {message}")


def note(message: str) -> None:
    """A line about a choice emlc made for the user (stderr: stdout stays the result)."""
    err.print(f"[cyan]note:[/] {escape(message)}", highlight=False, soft_wrap=True)
    transcript().info(f"note: {message}")


def text(message: str) -> None:
    out.print(message, highlight=False, soft_wrap=True, markup=False)


def json_line(data: Any) -> None:
    """One JSON object on stdout; NaN and infinities (not JSON) become null."""
    out.file.write(json.dumps(_finite(data), default=str) + "\n")
    out.file.flush()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class LogHandler(logging.Handler):
    """Log records on stderr as the console writes its own lines: `warning: ...`, `error: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            where = rank_prefix()
            if record.levelno >= logging.ERROR:
                err.print(f"[bold red]error:[/] {escape(where + message)}", highlight=False, soft_wrap=True)
            elif record.levelno >= logging.WARNING:
                err.print(f"[yellow]warning:[/] {escape(where + message)}", highlight=False, soft_wrap=True)
            else:
                err.print(f"{where}{record.levelname.lower()} {record.name}: {message}", highlight=False, soft_wrap=True,
                          markup=False)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class StatsColumn(ProgressColumn):
    """The losses and speed: the one text that gives way (cut with an ellipsis) when the terminal is narrow."""

    def render(self, task: Any) -> Text:
        return Text(task.fields.get("stats", ""), no_wrap=True, overflow="ellipsis")


def progress_columns() -> tuple[Any, ...]:
    """description, bar, count, stats, elapsed, remaining. Only the bar and the stats shrink on a narrow terminal
    (rich narrows the columns that may wrap), so the times always show whole."""
    fixed = lambda **kw: Column(no_wrap=True, **kw)  # noqa: E731
    return (TextColumn("[bold]{task.description}", table_column=fixed()),
            BarColumn(bar_width=None, table_column=Column(min_width=4, max_width=30)),
            TextColumn("{task.fields[count]}", table_column=fixed(justify="right")),
            StatsColumn(table_column=Column(overflow="ellipsis")),
            TimeElapsedColumn(table_column=fixed(min_width=7)),
            TimeRemainingColumn(table_column=fixed(min_width=7)))


class TrainingProgress:
    """Feeds rich progress bars from the trainer's StepReport / EpochReport events: one bar for the epoch and one
    for the whole run (training and fine-tune steps), each with its time elapsed and remaining."""

    def __init__(self, quiet: bool = False, finetune_epochs: int = 0, console: Optional[Console] = None) -> None:
        self.quiet, self.finetune_epochs, self.console = quiet, finetune_epochs, console or err
        self.progress: Progress | None = None
        self.task: Any = None
        self.total: Any = None
        self.train_epochs = 0

    def __enter__(self) -> "TrainingProgress":
        if not self.quiet:
            self.progress = Progress(*progress_columns(), console=self.console)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        from emlc_cli.prepare.verified import Prepared  # loaded already by the pipeline that sends the events

        if isinstance(event, Prepared):
            self._prepared(event)
        elif isinstance(event, EpochReport):
            self._epoch(event)
        elif isinstance(event, StepReport) and self.progress is not None:
            self._step(event)
        elif isinstance(event, EmbedReport):
            self._embedded(event)
        elif isinstance(event, FoldReport):
            done = "kept from the interrupted run" if event.kept else f"{event.seconds:.0f}s"
            self._show(f"cross-fit fold {event.fold + 1}/{event.folds}: scored {event.rows} noisy images the fold's "
                       f"models never trained on  [{done}]")

    def _show(self, plain: str, styled: Optional[str] = None) -> None:
        transcript().info(plain)
        if self.progress is not None:
            self.progress.console.print(styled or escape(plain), highlight=False, soft_wrap=True)

    def _prepared(self, event: "Prepared") -> None:  # its warnings are logged by the pipeline, and shown once
        self._show(f"{event.describe()}; inputs validated in {event.seconds:.1f}s")

    def _embedded(self, r: EmbedReport) -> None:
        """The frozen backbone's pass: a bar with images/s and the time left, or one line when the store had them."""
        if r.reused:
            self._show(f"embeddings of all {r.total} images read from the embedding store (nothing to embed)")
            return
        if self.progress is None:
            return
        stats = f"{r.images_per_s:.0f} img/s"
        if self.task is None:
            self.task = self.progress.add_task("embedding", total=r.total, stats=stats, count="")
        self.progress.update(self.task, completed=r.done, stats=stats, count=f"{r.done}/{r.total}")
        if r.done >= r.total:
            self.progress.remove_task(self.task)
            self.task = None
            self._show(f"embedded {r.total} images ({r.images_per_s:.0f} img/s)")

    def _epoch(self, event: EpochReport) -> None:
        line = (f"epoch {event.epoch + 1} ({event.phase}): holdout accuracy student {event.student_holdout_acc:.3f}, "
                f"teacher {event.teacher_holdout_acc:.3f}")
        self._show(f"{line}{' best' if event.best else ''}  [{event.seconds:.0f}s]",
                   f"{line}{' [green]best[/]' if event.best else ''}  \\[{event.seconds:.0f}s]")

    def _step(self, r: StepReport) -> None:
        assert self.progress is not None
        description = f"epoch {r.epoch + 1}/{r.epochs} {r.phase}"
        stats = f"{r.images_per_s:.0f} img/s, student {r.student_loss:.3f}" + (
            f", teacher {r.teacher_loss:.3f}" if r.phase == "meta" else "")
        self._whole_run(r)  # first: its row stays above the epoch's
        if r.step == 1 or self.task is None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(description, total=r.steps, stats=stats, count="")
        self.progress.update(self.task, completed=r.step, stats=stats, description=description, count=f"{r.step}/{r.steps}")

    def _whole_run(self, r: StepReport) -> None:
        """Steps done of (training epochs + fine-tune epochs) x steps per epoch."""
        assert self.progress is not None
        if r.phase != "finetune":
            self.train_epochs = r.epochs
            done, finetune = r.epoch * r.steps + r.step, self.finetune_epochs
        else:
            done, finetune = (self.train_epochs + r.epoch) * r.steps + r.step, r.epochs
        total = (self.train_epochs + finetune) * r.steps
        if self.total is None:
            self.total = self.progress.add_task("whole run", total=total, completed=max(0, done - 1), stats="", count="")
        share = f"{done / max(1, total):.0%}"
        self.progress.update(self.total, total=total, completed=done, count=share)


def clean_summary(summary: dict[str, Any], out_dir: str) -> None:
    table = Table(title="emlc clean", show_header=False)
    table.add_row("images", f"{summary['images']} ({summary['noisy']} noisy, {summary['verified']} verified)")
    share = summary["changed"] / max(1, summary["noisy"])
    table.add_row("labels changed", f"{summary['changed']} ({share:.1%} of the noisy pool)")
    estimate = summary.get("label_accuracy")
    if estimate:
        table.add_row("label accuracy (estimated)", label_accuracy_text(estimate))
    table.add_row("best holdout accuracy", f"{summary['best_holdout_score']:.3f}")
    if summary.get("cross_fit_reason"):
        table.add_row("cross-fitting", summary["cross_fit_reason"])
    if summary.get("skipped"):
        table.add_row("unreadable images skipped", escape(skipped_text(summary["skipped"])))
    table.add_row("training", f"{summary['train_seconds']:.0f}s, {summary['images_per_s']:.0f} img/s on {summary['device']}")
    table.add_row("run folder", escape(out_dir))
    out.print(table)
    if estimate and estimate.get("too_weak"):
        warning(too_weak_text(estimate))
    if summary.get("pretrained_hint"):
        note(summary["pretrained_hint"])


def skipped_text(skipped: dict[str, str]) -> str:
    """`2: a.png (cannot identify image file), b.png (truncated)`, the first few; summary.json has them all."""
    named = [f"{path} ({reason})" for path, reason in list(skipped.items())[:SKIPPED_SHOWN]]
    more = f", and {len(skipped) - SKIPPED_SHOWN} more (all in summary.json 'skipped')" if len(skipped) > SKIPPED_SHOWN else ""
    return f"{len(skipped)}: {', '.join(named)}{more}"


def label_accuracy_text(estimate: dict[str, Any]) -> str:
    given, fixed = estimate["given"], estimate["corrected"]
    if given is None or fixed is None:
        return estimate["source"]
    checked = f"; checked on {estimate['checked_on']} verified images" if estimate.get("checked_on") else ""
    return (f"given {given['estimate']:.1%} ({given['low']:.1%}-{given['high']:.1%}), corrected {fixed['estimate']:.1%} "
            f"({fixed['low']:.1%}-{fixed['high']:.1%}); from {estimate['source']}{checked}")


def too_weak_text(estimate: dict[str, Any]) -> str:
    head = f"the evidence is too weak to correct: {estimate['reason']}; {estimate['changed']} labels changed. "
    if estimate.get("all_picked"):
        return head + ("Verify a random sample too (images drawn at random, whatever their label, kept where they "
                       "are) and pass it as another --clean without the picked column")
    return head + (f"Verify more images (start with {TO_VERIFY}) and pass them as another --clean, with a column picked=1 "
                   f"(emlc review's decisions.csv has it); a random sample verified in place measures the noise itself")


def metrics_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=escape(title), show_header=False)
    for key, value in rows.items():
        shown = ("n/a" if math.isnan(value) else f"{value:.4f}") if isinstance(value, float) else str(value)
        table.add_row(escape(key), escape(shown))
    out.print(table)


TRUTH_ROWS = {  # evaluate --truth: what each figure measures
    "rows": "rows scored (in both the run and the truth file)",
    "given_accuracy": "accuracy of the given labels",
    "corrected_accuracy": "accuracy of the corrected labels",
    "precision": "precision: changed labels that were wrong",
    "recall": "recall: wrong labels that were changed",
    "f1": "F1 of precision and recall",
    "noisy_rows": "rows of the noisy pool scored",
    "noisy_given_accuracy": "noisy pool: accuracy of the given labels",
    "noisy_corrected_accuracy": "noisy pool: accuracy of the corrected labels",
}


def truth_table(title: str, result: dict[str, Any]) -> None:
    """evaluate --truth, each figure named by what it measures; one that cannot be computed says why."""
    rows = {TRUTH_ROWS.get(k, k): v for k, v in result.items()}
    metrics_table(title, rows)
    if not result.get("noisy_rows"):
        warning("the truth file covers no row of the noisy pool (only verified rows, whose labels were kept): "
                "the noisy-pool figures are n/a; pass true labels of the noisy images (e.g. not the --clean manifest)")
    elif result.get("precision") == 0.0 and result.get("recall") == 0.0:
        warning("precision and recall are 0: no scored row had a wrong given label that the run changed")


def per_class_table(classes: list[str], rows: list[dict[str, float]]) -> None:
    table = Table("class", "precision", "recall", "support")
    for name, row in zip(classes, rows):
        table.add_row(escape(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", str(row["support"]))
    out.print(table)
