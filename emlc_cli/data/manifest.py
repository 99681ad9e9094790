"""CSV manifests: the clean subset and label files in, the corrected-label manifest out."""
from __future__ import annotations

import csv
import io
import posixpath
from pathlib import Path
from typing import Iterator, Optional

from emlc_cli.errors import DataError

Row = tuple[str, str, int]  # (path, label, row number in the file, header = row 1)


PICKED_COLUMN = "picked"  # optional in a verified set: 1 marks a row emlc suggested (review's decisions.csv)
PICKED_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def read_path_label_csv(path: Path, key: str = "path") -> list[Row]:
    """Rows of a `path,label` CSV (BOM, CRLF, quoted fields and leading blank lines handled); errors name the
    file and row. A `path` column is normalised (see normalise_relpath); labels keep their spaces, so a class
    folder named 'dog ' can match (see match_label)."""
    return _read_rows(Path(path), key, picked_column=False)[0]


def read_verified_csv(path: Path, key: str = "path") -> tuple[list[Row], set[int]]:
    """A verified-set CSV: its rows, and the row numbers its optional `picked` column marks. Those images were
    verified because emlc suggested them (to_verify.csv, the review galleries), not at random: their (verified,
    given) pairs say nothing about the noise rate, as emlc chose them as likely wrong."""
    return _read_rows(Path(path), key, picked_column=True)


def _read_rows(path: Path, key: str, picked_column: bool) -> tuple[list[Row], set[int]]:
    records = _records(_read_text(path), path)
    header = _header(records, path)
    if key not in header or "label" not in header:
        raise DataError(f"header must contain '{key}' and 'label', got: {','.join(header)}", path=path)
    key_col, label_col = header.index(key), header.index("label")
    picked_col = header.index(PICKED_COLUMN) if picked_column and PICKED_COLUMN in header else None
    rows: list[Row] = []
    picked: set[int] = set()
    for number, fields in records:
        if all(not f.strip() for f in fields):
            continue
        if len(fields) <= max(key_col, label_col):
            raise DataError(f"expected {len(header)} fields, got {len(fields)}", path=path, row=number)
        value, label = fields[key_col].strip(), fields[label_col]
        if not value or not label.strip():
            raise DataError(f"empty {key if not value else 'label'}", path=path, row=number)
        rows.append((normalise_relpath(value, path, number) if key == "path" else value, label, number))
        if picked_col is not None and len(fields) > picked_col and _is_picked(fields[picked_col], path, number):
            picked.add(number)
    if not rows:
        raise DataError("no data rows after the header", path=path)
    return rows, picked


def _is_picked(text: str, path: Path, number: int) -> bool:
    value = PICKED_VALUES.get(text.strip().lower())
    if value is None:
        raise DataError(f"'{PICKED_COLUMN}' must be 1 or 0 (or empty), got '{text[:40]}'", path=path, row=number)
    return value


def _records(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) of every CSV record; a csv.Error (an over-long field, a NUL byte) names its row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    number = 0
    while True:
        number += 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"not a readable CSV row ({err})", path=path, row=number) from None
        yield number, fields


def _header(records: Iterator[tuple[int, list[str]]], path: Path) -> list[str]:
    """The first non-blank record, lower-cased; blank lines before it are skipped."""
    for _, fields in records:
        if any(f.strip() for f in fields):
            return [h.strip().lower() for h in fields]
    raise DataError("file is empty (expected a header line: path,label)", path=path)


def normalise_relpath(relpath: str, source: object, row: Optional[int] = None) -> str:
    """One spelling per file: `./cat//x.jpg` and `cat/x.jpg` are both `cat/x.jpg`. Absolute paths and `..`
    escapes are refused, naming the file and row."""
    if relpath.startswith(("/", "\\")) or Path(relpath).is_absolute():
        raise DataError(f"path '{relpath}' must be relative to the data folder", path=source, row=row)
    normal = posixpath.normpath(relpath)
    if normal == ".." or normal.startswith("../"):
        raise DataError(f"path '{relpath}' leads outside the data folder", path=source, row=row)
    if normal == ".":
        raise DataError(f"path '{relpath}' names the data folder itself, not an image", path=source, row=row)
    return normal


def match_label(label: str, lookup: dict[str, int]) -> Optional[int]:
    """The class a manifest label names: the exact text first (a folder 'dog '), then the text stripped."""
    found = lookup.get(label)
    return found if found is not None else lookup.get(label.strip())


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError("file not found", path=path)
    if not path.is_file():
        raise DataError("not a regular file", path=path)
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
        key = path if path in index or Path(path).is_absolute() else posixpath.normpath(path)
        if key not in index:
            raise DataError(f"'{path}' is not an image of the dataset", path=source, row=row)
        cls = match_label(label, lookup)
        if cls is None:
            raise DataError(f"label '{label.strip()}' is not a class; classes: {', '.join(classes)}", path=source, row=row)
        previous = verified.setdefault(index[key], cls)
        if previous != cls:
            raise DataError(f"'{path}' is listed twice with different labels ('{classes[previous]}', '{classes[cls]}')", path=source, row=row)
    return verified
