"""Options that say how to read a data source (Hub, save_to_disk, parquet, metadata.csv, .npy), shared by
`emlc clean` and `emlc evaluate`, and the canonical command line recorded in the run."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from emlc_cli.cli.options import DATA, FLAG

DataArg = Annotated[str, typer.Argument(
    metavar="DATA",
    help="Image folder (DATA/<class>/<image>, or flat with --labels), hf://owner/name, a save_to_disk folder, "
         "a parquet file or folder, an imagefolder with metadata.csv, or features.npy with --labels.",
    show_default=False)]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", metavar="NAME", rich_help_panel=DATA,
                                                  help="Hub dataset configuration (subset).", show_default=False)]
SplitOpt = Annotated[Optional[str], typer.Option("--split", metavar="NAME", rich_help_panel=DATA,
                                                 help="Split to read (default: the only one, else 'train').", show_default=False)]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", metavar="REV", rich_help_panel=DATA,
                                                    help="Hub branch, tag or commit.", show_default=False)]
ImageColumnOpt = Annotated[Optional[str], typer.Option("--image-column", metavar="COLUMN", rich_help_panel=DATA,
                                                       help="Image column (default: the first Image feature).", show_default=False)]
LabelColumnOpt = Annotated[str, typer.Option("--label-column", metavar="COLUMN", rich_help_panel=DATA,
                                             help="Label column (ClassLabel, string or int).")]
IdColumnOpt = Annotated[Optional[str], typer.Option("--id-column", metavar="COLUMN", rich_help_panel=DATA,
                                                    help="Column of unique row ids (default: the row index).", show_default=False)]
FeatureColumnOpt = Annotated[Optional[str], typer.Option(
    "--feature-column", metavar="COLUMN", rich_help_panel=DATA,
    help="Fixed-length float vector column (embeddings): trains an MLP (recipe 'features').", show_default=False)]
StreamOpt = Annotated[bool, typer.Option(
    "--stream", metavar=FLAG, rich_help_panel=DATA,
    help="Stream an hf:// dataset or parquet data (no full download, no Arrow copy); each pass reads only its columns.")]
PATH_PARAMS = ("data", "recipe")  # string parameters recorded as absolute paths when they name a local file


def build_spec(data: str, labels: Any = None, config: Optional[str] = None, split: Optional[str] = None,
               revision: Optional[str] = None, image_column: Optional[str] = None, label_column: str = "label",
               id_column: Optional[str] = None, feature_column: Optional[str] = None, command: Optional[str] = None,
               stream: bool = False) -> Any:
    from emlc_cli.data.spec import SourceSpec

    return SourceSpec(data, labels_csv=str(labels) if labels else None, config=config, split=split, revision=revision,
                      image_column=image_column, label_column=label_column, id_column=id_column,
                      feature_column=feature_column, command=command, streaming=stream)


def _subcommands(ctx: typer.Context) -> list[str]:
    """The subcommand names below the program (`clean`), however it was started (`emlc`, `python -m emlc_cli`)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return names[::-1]


def command_line(ctx: typer.Context, secret_params: tuple[str, ...] = ("token",)) -> str:
    """The current command rebuilt from its parsed parameters (defaults left out, secrets never included), local
    paths made absolute so that it can be pasted from any folder."""
    words = ["emlc", *_subcommands(ctx)]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in secret_params or value is None or value == param.default or value in ((), []):
            continue
        items = [_word(param.name, v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        if param.param_type_name == "argument":
            words += items
        elif getattr(param, "is_flag", False):
            words.append(param.opts[0])
        else:
            for item in items:
                words += [param.opts[0], item]
    return shlex.join(words)


def _word(name: Optional[str], value: Any) -> str:
    if isinstance(value, Path) or (name in PATH_PARAMS and _local_file(str(value))):
        return os.path.abspath(value)
    return str(value)


def _local_file(text: str) -> bool:
    return not text.startswith("hf://") and (Path(text).exists() or text.endswith((".yaml", ".yml")))
