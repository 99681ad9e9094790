"""Shared option aliases."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

OverridesArg = Annotated[Optional[list[str]], typer.Argument(help="Recipe overrides, e.g. train.epochs=3 model.width=32.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
SEED_MAX = 2**32 - 1  # numpy's legacy seeding (and so seed_everything) takes 0 <= seed < 2**32
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help=f"Random seed, 0 to {SEED_MAX}.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder to create.", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
