"""`emlc evaluate RUN --data DIR | --truth truth.csv`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import DeviceOpt, JsonOpt
from emlc_cli.errors import EmlcError


def evaluate_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by emlc clean.", show_default=False)],
    data: Annotated[Optional[Path], typer.Option("--data", help="Image folder with true labels: score the student.", show_default=False)] = None,
    truth: Annotated[Optional[Path], typer.Option("--truth", help="CSV path,label of true labels: score the corrections.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Score a run: the student on held-out images (--data), or the corrected labels (--truth)."""
    from emlc_cli import console, evaluation

    if (data is None) == (truth is None):
        raise EmlcError("pass exactly one of --data DIR or --truth truth.csv")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if data is not None:
        result = evaluation.evaluate_student(run, data, device)
        if as_json:
            typer.echo(json.dumps(result))
            return
        console.metrics_table(f"student on {data}", {"accuracy": result["accuracy"], "images": result["images"]})
        console.per_class_table(result["classes"], result["per_class"])
        return
    result = evaluation.evaluate_truth(run, truth)
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.metrics_table(f"corrected labels vs {truth}", result)
