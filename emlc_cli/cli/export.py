"""`emlc export RUN DEST --format imagefolder|label-studio`: a corrected copy of an image-folder dataset, or
Label Studio tasks with emlc's labels as pre-annotations."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import FLAG, QuietOpt, RelocatedDataOpt
from emlc_cli.errors import EmlcError

FORMATS = ("imagefolder", "label-studio")
EXAMPLES = """[bold]Examples[/]

  emlc export runs/images ./images-clean        # images-clean/<class>/<image>
  emlc export runs/images ./images-clean --data /new/images   # data moved
  emlc export runs/images ./ls --format label-studio  # Label Studio tasks"""


def export_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by emlc clean.", show_default=False)],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Folder to create: DEST/<corrected class>/<image>, or DEST/tasks.json + "
                                              "DEST/label_config.xml for label-studio.", show_default=False)],
    format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="imagefolder (torchvision ImageFolder) or label-studio (tasks JSON "
                                        "with emlc's label as a pre-annotation, to-verify rows first).")] = "imagefolder",
    url_prefix: Annotated[Optional[str], typer.Option("--url-prefix", metavar="PREFIX", help="label-studio: image URL = PREFIX + path under "
                          "DATA (default: Label Studio local-files URLs of the absolute paths).", show_default=False)] = None,
    data: RelocatedDataOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=FLAG, help="Replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write an image-folder run's images under their corrected class, or Label Studio tasks.

    imagefolder: hard links where possible, else copies. label-studio: tasks to review emlc's labels in (import tasks.json; decisions come back as --clean)."""
    from emlc_cli import console
    from emlc_cli.export import export_imagefolder, export_label_studio

    if format not in FORMATS:
        raise EmlcError(f"--format {format}: supported formats: {', '.join(FORMATS)} (for Hub layout use `emlc push RUN --to DIR`)")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if format == "label-studio":
        if data is not None:
            raise EmlcError("--data applies to --format imagefolder only")
        result = export_label_studio(run, dest, overwrite, url_prefix)
        if not quiet:
            console.text(f"{result.rows} Label Studio tasks ({result.changed} with a changed label) -> {result.location}")
        return
    result = export_imagefolder(run, dest, overwrite, data)
    if not quiet:
        console.text(f"{result.rows} images ({result.changed} under a new class) -> {result.location}")
