"""JSON read from disk, in one place: a file that is not JSON, is not UTF-8, or nests deeper than the parser's
recursion limit (`[[[[...` 100k deep raises RecursionError in json.loads) is one DataError naming the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emlc_cli.errors import DataError


def parse_json(text: str, path: Path, what: str = "not valid JSON") -> Any:
    """`text` (read from `path`) parsed; anything the parser refuses is one DataError: `what (reason)`."""
    try:
        return json.loads(text)
    except ValueError as err:  # JSONDecodeError
        raise DataError(f"{what} ({str(err)[:80]})", path=path) from None
    except RecursionError:
        raise DataError(f"{what} (nested too deeply)", path=path) from None


def read_json_file(path: Path, what: str = "not valid JSON", encoding: str = "utf-8") -> Any:
    """The JSON value held in the file at `path`; an unreadable file is one DataError too."""
    try:
        text = Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{what} (not {encoding}: {str(err)[:80]})", path=path) from None
    except OSError as err:
        raise DataError(f"cannot read ({err.strerror or err})", path=path) from None
    return parse_json(text, path, what)
