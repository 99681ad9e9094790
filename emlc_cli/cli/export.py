"""`emlc export RUN DEST --format imagefolder|label-studio|fiftyone|cvat`: a corrected copy of an image-folder
dataset, or the run's labels for Label Studio (pre-annotations), FiftyOne (a dataset) or CVAT (image tags)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import FLAG, QuietOpt, RelocatedDataOpt
from emlc_cli.errors import EmlcError

FORMATS = ("imagefolder", "label-studio", "fiftyone", "cvat")
EXAMPLES = """[bold]Examples[/]

  emlc export runs/images ./images-clean        # images-clean/<class>/<image>
  emlc export runs/images ./images-clean --data /new/images   # data moved
  emlc export runs/images ./ls --format label-studio  # Label Studio tasks
  emlc label-studio ./ls --url http://localhost:8080  # its project (LABEL_STUDIO_API_KEY)
  emlc export runs/images ./fo --format fiftyone      # fo.Dataset.from_dir(...)
  emlc export runs/images ./cvat --format cvat        # annotations.xml"""


def export_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by emlc clean.", show_default=False)],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Folder to create: DEST/<corrected class>/<image>; DEST/tasks.json + "
                                              "DEST/label_config.xml + DEST/storage.json (label-studio); DEST/samples.json + metadata.json "
                                              "(fiftyone); DEST/annotations.xml (cvat).", show_default=False)],
    format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="imagefolder (torchvision ImageFolder); label-studio (tasks JSON "
                                        "with emlc's label as a pre-annotation, to-verify rows first); fiftyone (a "
                                        "FiftyOneDataset folder: given and emlc labels, confidence, mistakenness); "
                                        "cvat (CVAT for images 1.1 XML, emlc's label as each image's tag).")] = "imagefolder",
    url_prefix: Annotated[Optional[str], typer.Option("--url-prefix", metavar="PREFIX", help="label-studio: image URL = PREFIX + path under "
                          "DATA (default: Label Studio local-files URLs, paths under --document-root).", show_default=False)] = None,
    document_root: Annotated[Optional[Path], typer.Option("--document-root", metavar="DIR", help="label-studio: the "
                             "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT Label Studio runs with, a folder above DATA "
                             "(default: DATA's parent); storage.json says so.", show_default=False)] = None,
    data: RelocatedDataOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=FLAG, help="Replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write an image-folder run's images under their corrected class, or its labels for a labeling tool.

    imagefolder: hard links where possible, else copies. label-studio: tasks to review emlc's labels in (`emlc label-studio DEST --url URL` makes the project; decisions come back as --clean). fiftyone: load with fo.Dataset.from_dir(DEST, dataset_type=fo.types.FiftyOneDataset). cvat: upload DATA's images to a task, then annotations.xml as "CVAT 1.1"."""
    from emlc_cli.cli import console
    from emlc_cli.export import image_folder as export

    if format not in FORMATS:
        raise EmlcError(f"--format {format}: supported formats: {', '.join(FORMATS)} (for Hub layout use `emlc push RUN --to DIR`)")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if data is not None and format != "imagefolder":
        raise EmlcError("--data applies to --format imagefolder only")
    if url_prefix is not None and format != "label-studio":
        raise EmlcError("--url-prefix applies to --format label-studio only")
    if document_root is not None and (format != "label-studio" or url_prefix is not None):
        raise EmlcError("--document-root applies to --format label-studio without --url-prefix only")
    tools = {"label-studio": (lambda: export.export_label_studio(run, dest, overwrite, url_prefix, document_root), "Label Studio tasks"),
             "fiftyone": (lambda: export.export_fiftyone(run, dest, overwrite), "FiftyOne samples"),
             "cvat": (lambda: export.export_cvat(run, dest, overwrite), "CVAT images")}
    if format in tools:
        written, what = tools[format]
        result = written()
        if not quiet:
            console.text(f"{result.rows} {what} ({result.changed} with a changed label) -> {result.location}")
        return
    result = export.export_imagefolder(run, dest, overwrite, data)
    if not quiet:
        console.text(f"{result.rows} images ({result.changed} under a new class) -> {result.location}")
