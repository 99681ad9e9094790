"""CSV manifests: the clean subset and label files in, the corrected-label manifest out."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from emlc_cli.errors import DataError

Row = tuple[str, str, int]  # (path, label, row number in the file, header = row 1)


def read_path_label_csv(path: Path, key: str = "path") -> list[Row]:
    """Rows of a `path,label` CSV (BOM, CRLF and quoted fields handled); errors name the file and row."""
    path = Path(path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if not header:
        raise DataError("file is empty (expected a header line: path,label)", path=path)
    if key not in header or "label" not in header:
        raise DataError(f"header must contain '{key}' and 'label', got: {','.join(header)}", path=path)
    key_col, label_col = header.index(key), header.index("label")
    rows: list[Row] = []
    for number, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) <= max(key_col, label_col):
            raise DataError(f"expected {len(header)} fields, got {len(fields)}", path=path, row=number)
        value, label = fields[key_col].strip(), fields[label_col].strip()
        if not value or not label:
            raise DataError(f"empty {key if not value else 'label'}", path=path, row=number)
        rows.append((value, label, number))
    if not rows:
        raise DataError("no data rows after the header", path=path)
    return rows


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError("file not found", path=path)
    if not path.is_file():
        raise DataError("not a file", path=path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 (byte {err.start}, line {line}); save the file as UTF-8", path=path) from None


def resolve_clean_rows(
    rows: list[Row], source: Path, index: dict[str, int], classes: list[str]
) -> dict[int, int]:
    """Map manifest rows to {dataset index: verified class}; every row must name a known image and class."""
    lookup = {name: i for i, name in enumerate(classes)}
    verified: dict[int, int] = {}
    for path, label, row in rows:
        key = Path(path).as_posix().removeprefix("./")
        if key not in index:
            raise DataError(f"'{path}' is not an image of the dataset", path=source, row=row)
        if label not in lookup:
            raise DataError(f"label '{label}' is not a class; classes: {', '.join(classes)}", path=source, row=row)
        previous = verified.setdefault(index[key], lookup[label])
        if previous != lookup[label]:
            raise DataError(f"'{path}' is listed twice with different labels ('{classes[previous]}', '{label}')", path=source, row=row)
    return verified
