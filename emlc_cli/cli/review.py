"""`emlc review RUN [--out report.html] [--png sheet.png] [--top N] [--data NEW_LOCATION]`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emlc_cli.cli.options import RelocatedDataOpt
from emlc_cli.errors import EmlcError

EXAMPLES = """[bold]Examples[/]

  emlc review runs/images                    # writes runs/images/review.html
  emlc review runs/images --out report.html --top 500
  emlc review runs/images --png sheet.png    # a contact sheet, for a ticket
  emlc review runs/images --data /new/images # the data moved since the run

In the report, mark images and download decisions.csv; it is the next round's extra --clean manifest."""


def review_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by emlc clean.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", help="HTML report to write (default "
                                                "RUN/review.html, or none when only --png is given).", show_default=False)] = None,
    png: Annotated[Optional[Path], typer.Option("--png", metavar="FILE", help="Also (or only) write a PNG contact sheet "
                                                "of the top changed images.", show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option("--top", "-n", metavar="N", help="Images per report section (default 200) "
                                               "or tiles on the sheet (default 36).", show_default=False, min=1)] = None,
    data: RelocatedDataOpt = None,
) -> None:
    """Write a self-contained HTML report of a run's corrections, and/or a PNG contact sheet."""
    from emlc_cli.cli import console
    from emlc_cli import review

    if not run.is_dir():
        raise EmlcError(f"{run}: run folder not found")
    if out is not None or png is None:
        report = review.write_report(run, out, top or review.REPORT_TOP, data)
        console.text(f"wrote {report.path} ({report.thumbnails} images, {report.bytes / 1e6:.1f} MB); open it in a browser")
        if report.missing_images:
            console.warning(f"{report.missing_images} images could not be read and show as grey squares")
    if png is not None:
        sheet = review.write_sheet(run, png, top or review.SHEET_TOP, data)
        console.text(f"wrote {sheet.path} ({sheet.tiles} tiles, {sheet.size[0]}x{sheet.size[1]} px)")
