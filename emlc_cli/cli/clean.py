"""`emlc clean DATA --clean clean.csv`: parse, call pipeline.clean, print the summary."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import DeviceOpt, OutOpt, OverridesArg, QuietOpt, RecipeOpt, SeedOpt


def clean_command(
    data: Annotated[Path, typer.Argument(help="Image folder (DATA/<class>/<image>), or a flat folder with --labels.", show_default=False)],
    clean: Annotated[list[Path], typer.Option("--clean", "-c", help="Verified subset, CSV path,label (repeatable).", show_default=False)],
    overrides: OverridesArg = None,
    out: OutOpt = None,
    recipe: RecipeOpt = "default",
    labels: Annotated[Optional[Path], typer.Option("--labels", help="CSV path,label giving the labels of a flat folder.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate inputs and print the resolved recipe; train nothing.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train EMLC on DATA and write corrected labels, checkpoints and a summary to --out."""
    from emlc_cli import console, pipeline
    from emlc_cli.recipe import dump_recipe, load_recipe

    resolved = load_recipe(recipe, overrides or [])
    out_dir = out or Path("runs") / data.resolve().name
    if dry_run:
        prepared = pipeline.prepare(data, clean, resolved, labels, seed)
        console.text(dump_recipe(resolved))
        console.text(f"# {len(prepared.dataset)} images, {len(prepared.dataset.classes)} classes, "
                     f"{len(prepared.verified)} verified, {len(prepared.holdout)} held out; would write {out_dir}")
        for message in prepared.warnings:
            console.warning(message)
        return
    with console.TrainingProgress(quiet) as progress:
        result = pipeline.clean(data, clean, out_dir, resolved, labels, device, seed, overwrite, on_event=progress)
    if not quiet:
        console.clean_summary(result.summary, str(result.out))
