"""`emlc push RUN --repo owner/name | --to DIR`: the cleaned dataset to the Hub, or to a local folder in Hub layout."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import FLAG, QuietOpt, RelocatedDataOpt
from emlc_cli.errors import EmlcError

EXAMPLES = """[bold]Examples[/]

  emlc push runs/images --to ./cleaned      # review it: load_dataset("./cleaned")
  emlc push runs/images --repo me/images-clean --private --license cc-by-4.0
  emlc push runs/images --repo me/images-clean --card-notes notes.md
  emlc push runs/images --to ./cleaned --data /new/images   # the data moved

The card names a local source by its folder name only; --card-notes adds your Markdown (description, citation)."""
CARD = "Dataset card"


def push_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by emlc clean.", show_default=False)],
    repo: Annotated[Optional[str], typer.Option("--repo", metavar="OWNER/NAME", show_default=False,
                                                help="Hub dataset repo (created if needed).")] = None,
    to: Annotated[Optional[Path], typer.Option("--to", metavar="DIR", show_default=False,
                                               help="Write the same dataset to this local folder instead (to review it first).")] = None,
    private: Annotated[bool, typer.Option("--private", metavar=FLAG, help="Create the Hub repo as private.")] = False,
    token: Annotated[Optional[str], typer.Option("--token", metavar="TOKEN", show_default=False,
                                                 help="Hub token (default: HF_TOKEN, else the huggingface_hub login).")] = None,
    branch: Annotated[Optional[str], typer.Option("--branch", metavar="NAME", show_default=False,
                                                  help="Hub branch to commit to (created if needed).")] = None,
    license: Annotated[Optional[str], typer.Option("--license", metavar="ID", rich_help_panel=CARD, show_default=False,
                                                   help="The card's licence: a Hub licence id (mit, cc-by-4.0, other...).")] = None,
    card_notes: Annotated[Optional[Path], typer.Option("--card-notes", metavar="FILE", rich_help_panel=CARD, show_default=False,
                                                       help="Markdown added to the card under its title: a description, "
                                                            "a citation, how the verified set was made.")] = None,
    data: RelocatedDataOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=FLAG, help="With --to: replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Publish the cleaned dataset and its card to the Hub (--repo), or to a local folder (--to).

    The dataset: the original data, the corrected `label`, `original_label`, confidence, changed and verified flags. The card: the summary, the change matrix, the recipe and the command."""
    from emlc_cli.cli import console
    from emlc_cli.export import hub

    if (repo is None) == (to is None):
        raise EmlcError("pass exactly one of --repo owner/name or --to DIR")
    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    card = hub.CardInfo(license, card_notes)
    if to is not None:
        if private or token or branch:
            raise EmlcError("--private, --token and --branch apply to --repo only")
        result = hub.write_hub_layout(run, to, overwrite, data, card)
    else:
        result = hub.push_to_hub(run, repo, private, token, branch, data, card)
    if not quiet:
        console.text(f"{result.rows} rows ({result.changed} labels changed, {result.verified} verified) -> {result.location}")
