"""`emlc clean DATA --clean clean.csv`: parse, call pipeline.clean, print the summary."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from emlc_cli.cli.options import DeviceOpt, OutOpt, OverridesArg, QuietOpt, SeedOpt
from emlc_cli.cli.source_options import (ConfigOpt, DataArg, FeatureColumnOpt, IdColumnOpt, ImageColumnOpt, LabelColumnOpt,
                                         RevisionOpt, SplitOpt, build_spec, command_line)


def clean_command(
    ctx: typer.Context,
    data: DataArg,
    clean: Annotated[list[Path], typer.Option("--clean", "-c", help="Verified subset, CSV path,label (id,label for datasets; repeatable).", show_default=False)],
    overrides: OverridesArg = None,
    out: OutOpt = None,
    recipe: Annotated[Optional[str], typer.Option("--recipe", "-r", help="Shipped recipe name or a YAML file [default: default, or features with --feature-column]", show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="CSV path,label giving the labels of a flat folder; CSV label[,id] for a .npy file.", show_default=False)] = None,
    config: ConfigOpt = None,
    split: SplitOpt = None,
    revision: RevisionOpt = None,
    image_column: ImageColumnOpt = None,
    label_column: LabelColumnOpt = "label",
    id_column: IdColumnOpt = None,
    feature_column: FeatureColumnOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run into the same --out.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first unreadable image instead of skipping it.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate inputs and print the resolved recipe; train nothing.")] = False,
    quiet: QuietOpt = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Processes on this machine (one per GPU, or CPU shares); runs torchrun for you.")] = 1,
) -> None:
    """Train EMLC on DATA and write corrected labels, checkpoints and a summary to --out."""
    from emlc_cli import console, distributed, pipeline
    from emlc_cli.recipe import dump_recipe, load_recipe
    from emlc_cli.runtime import check_nproc

    if nproc > 1 and not distributed.launched() and not dry_run:
        check_nproc(nproc, device)
        raise typer.Exit(distributed.launch(nproc, distributed.command_args("clean", sys.argv)))
    quiet = quiet or not distributed.is_main_process()

    spec = build_spec(data, labels, config, split, revision, image_column, label_column, id_column, feature_column,
                      command=command_line(ctx))
    resolved = load_recipe(recipe or ("features" if spec.uses_features else "default"), overrides or [])
    out_dir = out or Path("runs") / spec.run_name()
    if distributed.is_main_process():  # before any data is read, also for --dry-run
        _check_out(out_dir, spec, clean, recipe, overwrite, resume)
    if dry_run:
        prepared = pipeline.prepare(spec, clean, resolved, seed)
        console.text(dump_recipe(resolved))
        console.text(f"# {len(prepared.dataset)} images, {len(prepared.dataset.classes)} classes, "
                     f"{len(prepared.verified)} verified, {len(prepared.holdout)} held out; would write {out_dir}")
        for message in prepared.warnings:
            console.warning(message)
        return
    with console.TrainingProgress(quiet) as progress:
        result = pipeline.clean(spec, clean, out_dir, resolved, device, seed, overwrite, on_event=progress,
                                resume=resume, strict=strict)
    if not quiet:
        console.clean_summary(result.summary, str(result.out))


def _check_out(out_dir: Path, spec: Any, clean: list[Path], recipe: Optional[str], overwrite: bool, resume: bool) -> None:
    """--out may not be, hold or lie inside DATA, and may not hold a file this run reads (manifests, labels, recipe)."""
    from emlc_cli.outputs import check_out_dir

    reads = [(Path(p), "the input") for p in (*clean, spec.labels_csv, recipe) if p is not None and Path(p).exists()]
    check_out_dir(out_dir, spec, overwrite, resume, protect=reads)
