"""The .npy feature source: `features.npy` (N x D) plus a labels CSV `id,label` (`--labels`)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emlc_cli.data.columns import check_features, encode_labels, unique_ids
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.manifest import read_path_label_csv
from emlc_cli.data.spec import SourceSpec, origin_record
from emlc_cli.errors import DataError


def is_npy_file(location: str) -> bool:
    path = Path(location)
    return path.is_file() and path.suffix.lower() == ".npy"


def load_npy(spec: SourceSpec, kind: str = "npy") -> LabeledImages:
    """`features.npy` (N x D) plus a labels CSV `id,label`: ids 0..N-1 label those array rows (in any order),
    other ids label the array's rows in file order."""
    if not spec.labels_csv:
        raise DataError("a .npy feature file needs --labels labels.csv (columns: id,label, one row per array row)", path=spec.location)
    try:
        matrix = np.load(spec.location, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the feature array ({err})", path=spec.location) from None
    matrix = check_features(matrix, "the feature array", spec.location)
    rows = read_path_label_csv(Path(spec.labels_csv), key="id")
    if len(rows) != len(matrix):
        raise DataError(f"{len(rows)} label rows for {len(matrix)} feature rows", path=spec.labels_csv)
    ids = unique_ids([key for key, _, _ in rows], "id", spec.labels_csv)
    values: list[Any] = [label.strip() for _, label, _ in rows]
    if all(v.lstrip("-").isdigit() for v in values):
        values = [int(v) for v in values]
    labels, classes, distinct, label_type = encode_labels(values, "label", None, spec.labels_csv)
    ids, labels = _rows_in_array_order(ids, labels)
    origin = origin_record(replace(spec, feature_column=spec.feature_column or "features"), kind, len(ids),
                           label_type=label_type, label_values=distinct)
    return LabeledImages(Path(spec.location), ids, labels, classes, features=matrix, kind=kind, origin=origin)


def _rows_in_array_order(ids: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Ids that are exactly the row numbers 0..N-1 (the default row names) label those rows, in any order;
    other ids name the rows in file order."""
    if set(ids) != {str(i) for i in range(len(ids))}:
        return ids, labels
    order = np.argsort(np.array([int(i) for i in ids]), kind="stable")
    return [ids[i] for i in order], labels[order]
