"""Label, id and feature columns, checked and encoded the same way for every tabular source (Hugging Face
datasets, parquet, .npy + labels CSV)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from emlc_cli.errors import DataError


def encode_labels(values: list[Any], column: str, feature: Any, where: str) -> tuple[np.ndarray, list[str], list[Any], str]:
    """(label indices, class names, the original value of each class, label type).

    ClassLabel names are used in order; plain string/int labels become classes sorted by value."""
    from datasets import ClassLabel

    missing = next((i for i, v in enumerate(values) if v is None or (isinstance(feature, ClassLabel) and v < 0)), None)
    if missing is not None:
        raise DataError(f"column '{column}' has no label in row {missing}", path=where)
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        beyond = next((i for i, v in enumerate(values) if v >= len(names)), None)
        if beyond is not None:
            raise DataError(f"column '{column}', row {beyond}: label {values[beyond]} is not a class "
                            f"(the ClassLabel has {len(names)} names, so 0..{len(names) - 1})", path=where)
        return np.asarray(values, dtype=np.int64), names, list(range(len(names))), "ClassLabel"
    kinds = {type(v) for v in values}
    if not (kinds <= {str} or kinds <= {int}):
        names = ", ".join(sorted(k.__name__ for k in kinds))
        raise DataError(f"column '{column}' must hold class names or integers (ClassLabel, string or int), got {names}", path=where)
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise DataError(f"column '{column}': at least two distinct labels are needed", path=where)
    lookup = {v: i for i, v in enumerate(distinct)}
    labels = np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))
    return labels, [str(v) for v in distinct], distinct, "int" if kinds <= {int} else "string"


def unique_ids(ids: list[Optional[str]], column: str, where: str) -> list[str]:
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if value is None or value == "":
            raise DataError(f"column '{column}' is empty in row {row}", path=where)
        if value in seen:
            raise DataError(f"id '{value}' of column '{column}' appears in rows {seen[value]} and {row}; ids must be unique", path=where)
        seen[value] = row
    return list(seen)


def check_features(matrix: np.ndarray, what: str, where: str) -> np.ndarray:
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise DataError(f"{what} must hold fixed-length float vectors (got shape {matrix.shape})", path=where)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise DataError(f"{what}: row {bad[0]} has a NaN or infinite value ({len(bad)} rows in all)", path=where)
    return np.array(matrix, dtype=np.float32, order="C")  # a writable copy (torch refuses read-only memory)
