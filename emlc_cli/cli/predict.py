"""`emlc predict RUN DATA [--out preds.csv|preds.parquet]`: the run's student on new images or rows."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import DeviceOpt, QuietOpt
from emlc_cli.cli.source_options import ConfigOpt, FeatureColumnOpt, IdColumnOpt, ImageColumnOpt, RevisionOpt, SplitOpt

HEADER = ("key", "predicted_label", "confidence")  # how a predictions file emlc wrote begins


def predict_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by emlc clean.", show_default=False)],
    data: Annotated[str, typer.Argument(help="Images or rows to label: a folder of images (any layout), or any source "
                                             "emlc clean reads (its labels are ignored).", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="CSV or .parquet file to write (default: CSV on stdout): "
                   "key, predicted_label, confidence, p_<class> per class.", show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Labels CSV of a .npy file (ids of its rows).", show_default=False)] = None,
    config: ConfigOpt = None,
    split: SplitOpt = None,
    revision: RevisionOpt = None,
    image_column: ImageColumnOpt = None,
    id_column: IdColumnOpt = None,
    feature_column: FeatureColumnOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an --out file emlc predict wrote.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Label new data with a run's student, with the preprocessing recorded in student.json."""
    import sys

    from emlc_cli.cli import console
    from emlc_cli.student import inference
    from emlc_cli.data.kinds import spec_like_run
    from emlc_cli.errors import EmlcError
    from emlc_cli.run_folder.layout import read_source_record

    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    target = _check_target(out, run, data, overwrite) if out is not None else None
    spec = spec_like_run(read_source_record(run, required=False), data, labels, config=config, split=split,
                         revision=revision, image_column=image_column, id_column=id_column, feature_column=feature_column)
    classes, keys, probs, left_out = inference.predict_run(run, spec, device)
    if target is None:
        sys.stdout.write(inference.predictions_csv(inference.predictions_table(classes, keys, probs)))
    else:
        inference.write_predictions(target, classes, keys, probs)
        if not quiet:
            console.text(f"{len(keys)} predictions -> {target}")
    if left_out:  # on stderr, as every warning: stdout may be the predictions themselves
        console.warning(inference.left_out_text(left_out))


def _check_target(out: Path, run: Path, data: str, overwrite: bool) -> Path:
    """Never inside the data or the run; an existing file only with --overwrite, and only one emlc predict wrote."""
    from emlc_cli.run_folder.disk import check_replaceable
    from emlc_cli.errors import OutputError
    from emlc_cli.run_folder.writer import check_not_inputs, check_out_path, data_paths

    target = check_out_path(out)
    check_not_inputs(target, [(Path(run), "the run folder"), (Path(data), "the data"), *data_paths(run)], f"--out {out}")
    check_replaceable(out, "--out")
    if target.exists():
        if not overwrite:
            raise OutputError(f"--out {out} already exists; pass --overwrite to replace it")
        if not target.is_file() or not _ours(target):
            raise OutputError(f"--out {out} exists and is not a predictions file emlc wrote; remove it or choose another name")
    return target


def _ours(path: Path) -> bool:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            return tuple(pq.read_schema(path).names[:3]) == HEADER
        except Exception:  # not parquet at all
            return False
    with path.open("rb") as handle:
        return handle.read(64).decode("utf-8", "replace").startswith(",".join(HEADER))

