"""A run's student on new data (`emlc predict`, `emlc_cli.predict`): class probabilities, the run's preprocessing."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from emlc_cli.models.backbones import check_model_input
from emlc_cli.data.imagefolder import load_unlabelled_folder
from emlc_cli.data.kinds import detect_kind, load_source
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.spec import SourceSpec
from emlc_cli.run_folder.disk import write_atomic
from emlc_cli.student.evaluation import load_student, readable_probs
from emlc_cli.runtime.device import resolve_device


def predict_run(run: Path, spec: SourceSpec,
                device: str = "auto") -> tuple[list[str], list[str], np.ndarray, list[tuple[str, str]]]:
    """(classes, keys, probs, left_out): the student's softmax for every readable row of `spec`; unreadable rows
    are left out, and listed as (key, reason)."""
    torch_device = resolve_device(device)
    model, config = load_student(run, torch_device)
    dataset = _readable(spec)
    check_model_input(dataset, (config.get("frozen_backbone") or config)["architecture"])
    keep, probs, bad = readable_probs(model, dataset, config, torch_device, spec.location)
    return list(config["classes"]), [dataset.paths[i] for i in keep], probs, [(dataset.paths[i], why) for i, why in bad]


def left_out_text(left_out: list[tuple[str, str]]) -> str:
    """One line saying how many rows predict left out, naming the first."""
    key, reason = left_out[0]
    return f"{len(left_out)} unreadable rows left out of the predictions (the first: {key}: {reason})"


def _readable(spec: SourceSpec) -> LabeledImages:
    """Any source emlc reads; a folder is read as every image under it (class folders or not: labels are not
    needed), unless a labels CSV says which files."""
    if detect_kind(spec.location) == "imagefolder" and spec.labels_csv is None:
        return load_unlabelled_folder(Path(spec.location))
    return load_source(spec)


def predictions_table(classes: list[str], keys: list[str], probs: np.ndarray) -> dict[str, Any]:
    """The columns of a predictions file: key, predicted_label, confidence, then p_<class> per class."""
    best = probs.argmax(1) if len(keys) else np.zeros(0, dtype=np.int64)
    columns: dict[str, Any] = {"key": keys, "predicted_label": [classes[i] for i in best],
                               "confidence": probs[np.arange(len(best)), best] if len(keys) else []}
    columns.update({f"p_{name}": probs[:, j] if len(keys) else [] for j, name in enumerate(classes)})
    return columns


def predictions_csv(columns: dict[str, Any]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    names = list(columns)
    writer.writerow(names)
    for row in zip(*(columns[n] for n in names)):
        writer.writerow([f"{v:.6f}" if isinstance(v, (float, np.floating)) else v for v in row])
    return buffer.getvalue()


def write_predictions(target: Path, classes: list[str], keys: list[str], probs: np.ndarray) -> Path:
    """CSV, or parquet by suffix (see predictions_table), written atomically."""
    columns = predictions_table(classes, keys, probs)
    if target.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(columns), sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = predictions_csv(columns).encode("utf-8")
    write_atomic(target, data)
    return target
