"""`emlc review`: read a run folder, pick what a person should look at, and write a self-contained HTML
report or a PNG contact sheet. The original images are only read.

run_view reads and sorts the run, thumbnails reopens its images, report renders the HTML (report_assets: its
CSS and JS), sheet the contact sheet, and write puts either on disk."""
from __future__ import annotations

from emlc_cli.review.run_view import REPORT_TOP, Item, RunView, load_run
from emlc_cli.review.thumbnails import THUMB_PX, Thumbnails, image_opener
from emlc_cli.review.write import SHEET_TOP, ReportResult, SheetResult, write_report, write_sheet

__all__ = ["REPORT_TOP", "SHEET_TOP", "THUMB_PX", "Item", "ReportResult", "RunView", "SheetResult", "Thumbnails",
           "image_opener", "load_run", "write_report", "write_sheet"]
