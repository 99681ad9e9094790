"""A run's student on new data (`emlc predict`, `emlc_cli.predict`): class probabilities, the run's preprocessing."""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emlc_cli.backbones import check_model_input
from emlc_cli.data.decode import decode_images
from emlc_cli.data.imagefolder import load_unlabelled_folder
from emlc_cli.data.kinds import detect_kind, load_source
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.loaders import BatchMaker, ordered_batches
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import DataError, OutputError
from emlc_cli.evaluation import load_student
from emlc_cli.runtime import resolve_device


def predict_run(run: Path, spec: SourceSpec, device: str = "auto") -> tuple[list[str], list[str], np.ndarray]:
    """(classes, keys, probs): the student's softmax for every readable row of `spec`; unreadable rows are left out."""
    torch_device = resolve_device(device)
    model, config = load_student(run, torch_device)
    dataset = _readable(spec)
    check_model_input(dataset, (config.get("frozen_backbone") or config)["architecture"])
    images, bad = decode_images(dataset, config["input_size"])
    if images.ndim == 2 and images.shape[1] != config.get("in_features"):
        raise DataError(f"feature vectors of length {images.shape[1]}; the run was trained on length "
                        f"{config.get('in_features')}", path=spec.location)
    keep = np.setdiff1d(np.arange(len(dataset)), [i for i, _ in bad])
    probs = _softmax(model, images[torch.as_tensor(keep, dtype=torch.long)], torch_device)
    return list(config["classes"]), [dataset.paths[i] for i in keep], probs


def _readable(spec: SourceSpec) -> LabeledImages:
    """Any source emlc reads; a folder is read as every image under it (class folders or not: labels are not
    needed), unless a labels CSV says which files."""
    if detect_kind(spec.location) == "imagefolder" and spec.labels_csv is None:
        return load_unlabelled_folder(Path(spec.location))
    return load_source(spec)


@torch.no_grad()
def _softmax(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> np.ndarray:
    batches = BatchMaker(device, "none", channels_last=False)
    parts = [torch.softmax(model(batches(images[idx], train=False)).float(), 1).cpu() for idx in ordered_batches(len(images), batch_size)]
    return torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros((0, 0), dtype=np.float32)


def write_predictions(target: Path, classes: list[str], keys: list[str], probs: np.ndarray) -> Path:
    """CSV (or parquet by suffix): key, predicted_label, confidence, then p_<class> per class; atomic."""
    best = probs.argmax(1) if len(keys) else np.zeros(0, dtype=np.int64)
    columns: dict[str, Any] = {"key": keys, "predicted_label": [classes[i] for i in best],
                               "confidence": probs[np.arange(len(best)), best] if len(keys) else []}
    columns.update({f"p_{name}": probs[:, j] if len(keys) else [] for j, name in enumerate(classes)})
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    try:
        if target.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(columns), partial)
        else:
            _write_csv(Path(partial), columns)
        os.replace(partial, target)
    except OSError as err:
        raise OutputError(f"cannot write {target} ({err.strerror or err})") from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def _write_csv(path: Path, columns: dict[str, Any]) -> None:
    names = list(columns)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names)):
            writer.writerow([f"{v:.6f}" if isinstance(v, (float, np.floating)) else v for v in row])
