"""`emlc export RUN --format imagefolder DIR`: a corrected copy of an image-folder dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emlc_cli.cli.options import QuietOpt
from emlc_cli.errors import EmlcError

FORMATS = ("imagefolder",)


def export_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by emlc clean.", show_default=False)],
    dest: Annotated[Path, typer.Argument(help="Folder to create: DEST/<corrected class>/<image>.", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="Output layout; imagefolder (torchvision ImageFolder).")] = "imagefolder",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the images of an image-folder run under their corrected class (hard links where possible, else copies)."""
    from emlc_cli import console
    from emlc_cli.export import export_imagefolder

    if format not in FORMATS:
        raise EmlcError(f"--format {format}: supported formats: {', '.join(FORMATS)} (for Hub layout use `emlc push RUN --to DIR`)")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    result = export_imagefolder(run, dest, overwrite)
    if not quiet:
        console.text(f"{result.rows} images ({result.changed} under a new class) -> {result.location}")
