"""`emlc push RUN --repo owner/name | --to DIR`: the cleaned dataset to the Hub, or to a local folder in Hub layout."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import QuietOpt
from emlc_cli.errors import EmlcError


def push_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by emlc clean.", show_default=False)],
    repo: Annotated[Optional[str], typer.Option("--repo", help="Hub dataset repo, owner/name (created if needed).", show_default=False)] = None,
    to: Annotated[Optional[Path], typer.Option("--to", help="Write the same dataset to this local folder instead (to review it first).", show_default=False)] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo as private.")] = False,
    token: Annotated[Optional[str], typer.Option("--token", help="Hub token (default: HF_TOKEN, else the huggingface_hub login).", show_default=False)] = None,
    branch: Annotated[Optional[str], typer.Option("--branch", help="Hub branch to commit to (created if needed).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --to: replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Publish the cleaned dataset: original data, corrected `label`, `original_label`, confidence, changed and
    verified flags, and a dataset card (summary, change matrix, recipe, command)."""
    from emlc_cli import console, hub

    if (repo is None) == (to is None):
        raise EmlcError("pass exactly one of --repo owner/name or --to DIR")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if to is not None:
        if private or token or branch:
            raise EmlcError("--private, --token and --branch apply to --repo only")
        result = hub.write_hub_layout(run, to, overwrite)
    else:
        result = hub.push_to_hub(run, repo, private, token, branch)
    if not quiet:
        console.text(f"{result.rows} rows ({result.changed} labels changed, {result.verified} verified) -> {result.location}")
