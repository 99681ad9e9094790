"""`emlc label-studio DEST --url URL`: the Label Studio project for an `emlc export --format label-studio` folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import QuietOpt

EXAMPLES = """[bold]Examples[/]

  emlc export runs/images ./ls --format label-studio
  emlc label-studio ./ls --url http://localhost:8080
  emlc label-studio ./ls --url http://localhost:8080 --title "round 1" --quiet   # prints its URL

Start Label Studio first with the two variables of ./ls/storage.json (LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=the data folder's parent), or the images answer 404. The token: LABEL_STUDIO_API_KEY or --token, never printed or written."""


def label_studio_command(
    export_dir: Annotated[Path, typer.Argument(metavar="DEST", help="A folder written by emlc export --format label-studio.",
                                               show_default=False)],
    url: Annotated[str, typer.Option("--url", metavar="URL", help="Label Studio's address.")] = "http://localhost:8080",
    title: Annotated[Optional[str], typer.Option("--title", metavar="TEXT", show_default=False,
                                                 help="The project's title (default: emlc DEST's name).")] = None,
    token: Annotated[Optional[str], typer.Option("--token", metavar="TOKEN", show_default=False,
                                                 help="Label Studio API token (default: LABEL_STUDIO_API_KEY).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Create the Label Studio project for an export: its labeling interface, the Local Files storage that serves
    the images, and the tasks with emlc's labels as pre-annotations.

    Label Studio must run with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and the LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT written in DEST/storage.json. Export the project as JSON when done and pass it to emlc clean as one more --clean."""
    from emlc_cli.cli import console
    from emlc_cli.export import label_studio_project as labelstudio_project

    secret = labelstudio_project.resolve_token(token, dict(os.environ))
    export = labelstudio_project.read_export(export_dir)
    project = labelstudio_project.create_project(export, url, secret, title or f"emlc {export_dir.resolve().name}")
    if quiet:
        console.text(project.url)
        return
    console.text(f"project {project.id}: {project.tasks} tasks, images from the Local Files storage {project.storage} "
                 f"(Label Studio must run with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={export.document_root}) -> {project.url}")
