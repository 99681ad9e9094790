"""Writing what `emlc review` renders: the HTML report and the PNG contact sheet, each atomically, and only
over a file emlc review wrote itself."""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.run_folder.disk import check_replaceable, write_atomic
from emlc_cli.errors import DataError
from emlc_cli.run_folder.writer import check_file_target, check_not_inputs
from emlc_cli.review.report import render_report
from emlc_cli.review.run_view import REPORT_TOP, load_run
from emlc_cli.review.sheet import render_sheet
from emlc_cli.review.thumbnails import Thumbnails, image_opener

log = logging.getLogger(__name__)
SHEET_TOP = 36     # tiles on a contact sheet unless --top says otherwise
SHEET_SOFTWARE = "emlc review"


@dataclass
class ReportResult:
    path: Path
    thumbnails: int
    missing_images: int
    bytes: int
    shown: dict[str, int] = field(default_factory=dict)


@dataclass
class SheetResult:
    path: Path
    tiles: int
    size: tuple[int, int]
    missing_images: int


def write_report(run: Path, out: Optional[Path] = None, top: int = REPORT_TOP, data: Optional[str] = None) -> ReportResult:
    """Write the self-contained HTML report of `run` to `out` (default RUN/review.html); `data`: where the run's
    data is now, if it moved."""
    view = load_run(run, top, data)
    target = Path(out) if out is not None else Path(run) / run_folder.REVIEW
    check_file_target(target, Path(run), "--out", _our_report)
    _not_in_data(target, data, "--out")
    check_replaceable(target, "--out")
    thumbs = Thumbnails(image_opener(view.run, view.source))
    html = render_report(view, thumbs)
    write_atomic(target, html.encode("utf-8"))
    if thumbs.missing:  # the command says so once (a log warning here printed it a second time)
        log.info("%d images could not be read", len(thumbs.missing))
    shown = {name: len(items) for name, items in view.sections()}
    return ReportResult(target, sum(shown.values()), len(thumbs.missing), len(html.encode("utf-8")), shown)


def write_sheet(run: Path, png: Path, top: int = SHEET_TOP, data: Optional[str] = None) -> SheetResult:
    """Write a PNG contact sheet of the `top` most confident changes of `run`."""
    view = load_run(run, top, data)
    check_file_target(Path(png), Path(run), "--png", _our_sheet)
    _not_in_data(Path(png), data, "--png")
    check_replaceable(Path(png), "--png")
    if not view.changed:
        raise DataError("no label was changed in this run; there is nothing to put on a contact sheet",
                        path=Path(run) / run_folder.CORRECTED)
    thumbs = Thumbnails(image_opener(view.run, view.source))
    sheet = render_sheet(view, thumbs)
    buffer = io.BytesIO()
    info = PngInfo()
    info.add_text("Software", SHEET_SOFTWARE)
    sheet.save(buffer, format="PNG", optimize=True, pnginfo=info)
    write_atomic(Path(png), buffer.getvalue())
    return SheetResult(Path(png), len(view.changed), sheet.size, len(thumbs.missing))


def _not_in_data(target: Path, data: Optional[str], option: str) -> None:
    """With --data, the data's new location is protected as its recorded one is."""
    if data and not data.startswith("hf://"):
        check_not_inputs(target, [(Path(data), "the data")], f"{option} {target}")


def _our_report(path: Path) -> bool:
    """An HTML report emlc review wrote (it carries <meta name="emlc-run">)."""
    try:
        with path.open("rb") as handle:
            return b'<meta name="emlc-run"' in handle.read(4096)
    except OSError:
        return False


def _our_sheet(path: Path) -> bool:
    """A contact sheet emlc review wrote (PNG text chunk Software = emlc review)."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == SHEET_SOFTWARE
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError):
        return False
