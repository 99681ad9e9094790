"""Shared option aliases, the help panels they are grouped in, and the command class that writes the usage line
with plain placeholders (`DATA [KEY=VALUE]...`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

# Help panels (`emlc clean --help` groups its options by what they are about).
DATA, VERIFIED, RECIPE, RUN, OUTPUTS, DEVICES = "Data", "Verified set", "Recipe", "Run", "Outputs", "Devices"
FLAG = ""  # the metavar of a flag: no `<bool>` placeholder

OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="KEY=VALUE", help="Recipe overrides, section.key=value: train.epochs=3 model.width=32 "
                              "(`emlc recipes show NAME` lists the keys).", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", rich_help_panel=DEVICES,
                                        help="auto (CUDA when present), cpu, cuda or cuda:N.")]
SEED_MAX = 2**32 - 1  # numpy's legacy seeding (and so seed_everything) takes 0 <= seed < 2**32
SeedOpt = Annotated[int, typer.Option("--seed", metavar="N", min=0, max=SEED_MAX, rich_help_panel=RECIPE,
                                      help=f"Random seed, 0 to {SEED_MAX}.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Run folder to create.",
                                                rich_help_panel=OUTPUTS, show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar=FLAG, rich_help_panel=OUTPUTS,
                                        help="No progress or tables (errors and warnings still show).")]
JsonOpt = Annotated[bool, typer.Option("--json", metavar=FLAG, rich_help_panel=OUTPUTS,
                                       help="Print one JSON object on stdout instead of tables.")]
RelocatedDataOpt = Annotated[Optional[str], typer.Option(
    "--data", metavar="PATH", show_default=False,
    help="Where the run's data is now, if it moved since `emlc clean` (default: the location in RUN/source.json).")]


class Command(TyperCommand):
    """A typer command whose usage line names its arguments as its help does: `DATA [KEY=VALUE]...`."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or str(param.name).upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def get_params(self, ctx: Any) -> list[Any]:
        return plain_flags(super().get_params(ctx))


def plain_flags(params: list[Any]) -> list[Any]:
    """Flags (--help, --install-completion, ...) without a `<bool>` placeholder."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = FLAG
    return params
