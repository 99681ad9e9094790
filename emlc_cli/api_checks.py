"""The Python API's in-memory inputs, checked once where api.py converts them: every failure is one DataError
naming the user's object and row (`labels[17]: NaN is not a label`), never an Arrow, numpy or pandas exception,
and never emlc's temporary files (gone by the time the user reads the message). The library prints nothing:
datasets' progress bars are off while the API works, and the user's setting is put back after."""
from __future__ import annotations

import contextlib
import csv
import math
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from emlc_cli.errors import DataError, EmlcError

INT64 = (-(2 ** 63), 2 ** 63 - 1)
_MISSING = ("NoneType", "NAType", "NaTType")
LABELS, VERIFIED, FEATURES, DATA = "labels.csv", "verified.csv", "features.npy", "data"  # files under scratch


def checked_labels(values: Any, what: str, names: Optional[Iterable[Any]] = None) -> list[Any]:
    """Labels given in memory (`labels=`, a DataFrame's label column, a verified set's labels) as a list: class
    names or ints, one kind throughout. `names`: how each is named after `what` (default its position)."""
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
        raise DataError(f"{what}: expected one class name or int per row, not a {type(values).__name__}")
    kind = getattr(getattr(values, "dtype", None), "kind", "O")
    labels = values.tolist() if hasattr(values, "tolist") else list(values)  # Python scalars, fast for a column
    if kind in "biuU" or (kind == "f" and np.isfinite(np.asarray(values)).all()):
        return labels  # a typed array or column: one kind throughout, and no NaN
    if all(isinstance(value, str) for value in labels):
        return labels
    kinds: dict[bool, int] = {}
    for i, (name, value) in enumerate(zip(names if names is not None else range(len(labels)), labels)):
        problem = _label_problem(value)
        if problem is None:
            kinds.setdefault(isinstance(value, str), i)
            problem = None if len(kinds) == 1 else f"{value!r} among labels of another type; use names or ints, not both"
        if problem:
            raise DataError(f"{what}[{name!r}]: {problem}" if names is not None else f"{what}[{name}]: {problem}")
    return labels


def _label_problem(value: Any) -> Optional[str]:
    """Why `value` cannot be a label, or None when it can."""
    if isinstance(value, str):
        return None
    if isinstance(value, np.bool_):
        return None
    if isinstance(value, (int, np.integer)):
        return None if INT64[0] <= value <= INT64[1] else f"{value} does not fit in a 64-bit integer"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "NaN is not a label"
        return None if math.isfinite(value) else f"{value} is not a label"
    if type(value).__name__ in _MISSING:
        return "a missing value is not a label"
    return f"a {type(value).__name__} is not a label; use class names or ints"


def checked_features(array: np.ndarray, what: str = "data") -> np.ndarray:
    """N x D feature vectors as float32; a row that does not convert is named (`data[3]: could not convert ...`)."""
    try:
        return np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        pass
    for i, row in enumerate(array):
        try:
            np.asarray(row, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as err:
            raise DataError(f"{what}[{i}]: feature vectors hold numbers ({str(err)[:80]})") from None
    raise DataError(f"{what}: feature vectors hold numbers")


def checked_verified_frame(frame: Any) -> dict[str, Any]:
    """A verified DataFrame as {key: label}: its first column the path or id, its second the label."""
    if frame.shape[1] < 2:
        raise DataError("verified: a DataFrame needs two columns (path or id, then label); "
                        f"this one has {frame.shape[1]}")
    keys = [str(k) for k in frame.iloc[:, 0]]
    return dict(zip(keys, checked_labels(frame.iloc[:, 1], "verified", keys)))


# ---- the user's names in messages -----------------------------------------------------------------------
@contextlib.contextmanager
def user_names(scratch: Path) -> Iterator[None]:
    """An EmlcError raised inside names the user's objects, not the files emlc wrote them to under `scratch`."""
    try:
        yield
    except EmlcError as err:
        message = _renamed(err.message, Path(scratch))
        if message != err.message:
            err.message, err.args = message, (message,)
        raise


def _renamed(message: str, scratch: Path) -> str:
    roots = "|".join(re.escape(str(p)) for p in {scratch, scratch.resolve()})
    pattern = re.compile(rf"(?:{roots})/([\w.]+)(?:/[^\s,:]*)?(?:, row (\d+))?")
    return pattern.sub(lambda m: _user_name(m.group(1), m.group(2), scratch), message)


def _user_name(file: str, row: Optional[str], scratch: Path) -> str:
    """labels.csv row N -> labels[N-2] (row 1 is the header); verified.csv row N -> verified[its key]."""
    if file == LABELS:
        return f"labels[{int(row) - 2}]" if row else "labels"
    if file == VERIFIED:
        key = _verified_key(scratch / VERIFIED, int(row)) if row else None
        return f"verified[{key!r}]" if key is not None else "verified" + (f", row {int(row) - 1}" if row else "")
    if file in (DATA, FEATURES):
        return "data" + (f", row {row}" if row else "")
    return f"emlc's temporary {file}"


def _verified_key(path: Path, row: int) -> Optional[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError:
        return None
    return rows[row - 1][0] if 2 <= row <= len(rows) and rows[row - 1] else None


# ---- nothing printed ----------------------------------------------------------------------------------
@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """datasets' progress bars ("Saving the dataset ...") off inside, the user's setting back after."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    _set_bars(datasets, False)
    try:
        yield
    finally:
        _set_bars(datasets, enabled)


@contextlib.contextmanager
def bars_kept() -> Iterator[None]:
    """The user's datasets progress-bar setting as it was before the call (emlc's readers switch the bars off):
    as set, or datasets' default when the call is what imported it."""
    module = sys.modules.get("datasets")
    before = module.is_progress_bar_enabled() if module is not None else None
    try:
        yield
    finally:
        module = sys.modules.get("datasets")
        if module is not None:
            _set_bars(module, before if before is not None else not module.config.HF_DATASETS_DISABLE_PROGRESS_BARS)


def _set_bars(datasets: Any, enabled: bool) -> None:
    with warnings.catch_warnings():  # HF_DATASETS_DISABLE_PROGRESS_BARS has priority, and warns that it does
        warnings.simplefilter("ignore")
        (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
