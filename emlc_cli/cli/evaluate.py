"""`emlc evaluate RUN --data DIR | --truth truth.csv`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import DeviceOpt, JsonOpt
from emlc_cli.cli.source_options import ConfigOpt, FeatureColumnOpt, IdColumnOpt, ImageColumnOpt, RevisionOpt, SplitOpt
from emlc_cli.errors import EmlcError

EXAMPLES = """[bold]Examples[/]

  emlc evaluate runs/images --truth truth.csv    # corrected labels vs true ones
  emlc evaluate runs/images --data ./test_images # the student on held-out images
  emlc evaluate runs/images --truth truth.csv --json

--truth scores every row the file names; precision and recall measure "changed" as a detector of wrong given labels. Pass true labels of noisy images: the --clean manifest covers only verified rows, which are never changed."""


def evaluate_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by emlc clean.", show_default=False)],
    data: Annotated[Optional[str], typer.Option("--data", metavar="DATA", help="Data with true labels: score the student. Any source emlc clean reads; "
                    "columns and config default to the run's.", show_default=False)] = None,
    truth: Annotated[Optional[Path], typer.Option("--truth", metavar="CSV", help="CSV path,label (id,label for datasets) of true labels: score the corrections.", show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", metavar="CSV", help="With --data: labels CSV of a flat folder or a .npy file.", show_default=False)] = None,
    config: ConfigOpt = None,
    split: SplitOpt = None,
    revision: RevisionOpt = None,
    image_column: ImageColumnOpt = None,
    label_column: Annotated[Optional[str], typer.Option("--label-column", metavar="COLUMN", help="Label column (default: the run's).", show_default=False)] = None,
    id_column: IdColumnOpt = None,
    feature_column: FeatureColumnOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Score a run: the student on held-out images (--data), or the corrected labels (--truth)."""
    from emlc_cli.cli import console
    from emlc_cli.student import evaluation

    if (data is None) == (truth is None):
        raise EmlcError("pass exactly one of --data DIR or --truth truth.csv")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if data is not None:
        from emlc_cli.data.kinds import spec_like_run
        from emlc_cli.run_folder.layout import read_source_record

        spec = spec_like_run(read_source_record(run, required=False), data, labels, config=config, split=split, revision=revision,
                             image_column=image_column, label_column=label_column, id_column=id_column, feature_column=feature_column)
        result = evaluation.evaluate_student(run, spec, device)
        if as_json:
            console.json_line(result)
            return
        console.metrics_table(f"student on {data}", {"accuracy": result["accuracy"], "images": result["images"]})
        console.per_class_table(result["classes"], result["per_class"])
        return
    result = evaluation.evaluate_truth(run, truth)
    if as_json:
        console.json_line(result)
        return
    console.truth_table(f"corrected labels vs {truth}", result)
