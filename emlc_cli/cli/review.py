"""`emlc review RUN [--out report.html] [--png sheet.png] [--top N]`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.errors import EmlcError


def review_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by emlc clean.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML report to write (default RUN/review.html, "
                                                "or none when only --png is given).", show_default=False)] = None,
    png: Annotated[Optional[Path], typer.Option("--png", help="Also (or only) write a PNG contact sheet of the top "
                                                "changed images.", show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option("--top", "-n", help="Images per report section (default 200) or tiles on "
                                               "the sheet (default 36).", show_default=False, min=1)] = None,
) -> None:
    """Write a self-contained HTML report of a run's corrections, and/or a PNG contact sheet."""
    from emlc_cli import console, review

    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if out is not None or png is None:
        report = review.write_report(run, out, top or review.REPORT_TOP)
        console.text(f"wrote {report.path} ({report.thumbnails} images, {report.bytes / 1e6:.1f} MB); open it in a browser")
        if report.missing_images:
            console.warning(f"{report.missing_images} images could not be read and show as grey squares")
    if png is not None:
        sheet = review.write_sheet(run, png, top or review.SHEET_TOP)
        console.text(f"wrote {sheet.path} ({sheet.tiles} tiles, {sheet.size[0]}x{sheet.size[1]} px)")
