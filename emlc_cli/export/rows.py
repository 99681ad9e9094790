"""The rows of an image-folder run that an export copies or points at: corrected.csv, every path checked to name
a regular file inside the data folder. Here, not in run_folder/layout.py, because the check belongs to data/
(data/imagefolder.check_inside), which the run folder's format sits below."""
from __future__ import annotations

from pathlib import Path

from emlc_cli.data.imagefolder import check_inside
from emlc_cli.run_folder.layout import CORRECTED, CORRECTED_COLUMNS, read_corrected


def read_image_rows(run: Path, root: Path) -> list[dict[str, str]]:
    """corrected.csv of an image-folder run, for an export that copies or points at its files: every path must
    name a regular file inside the data folder `root` (a tampered row `../../etc/hostname` is one DataError)."""
    rows = read_corrected(run, required=CORRECTED_COLUMNS)
    for line, row in enumerate(rows, start=2):
        check_inside(Path(root), row["path"], Path(run) / CORRECTED, line)
    return rows
