"""`emlc evaluate`: score a run's student on labelled images, or its corrected labels against truth."""
from __future__ import annotations

import contextlib
import csv
import posixpath
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from emlc_cli import metrics
from emlc_cli.run_folder import layout as run_folder
from emlc_cli.models.backbones import check_model_input
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.kinds import load_source
from emlc_cli.cache.batches import BatchMaker, ordered_batches
from emlc_cli.data.manifest import read_path_label_csv
from emlc_cli.errors import DataError
from emlc_cli.train.frozen import FrozenFeatures, Views, rebuild_backbone, recorded_encoder
from emlc_cli.models.build import build_classifier, rebuild_timm_classifier
from emlc_cli.run_folder.writer import load_model_files
from emlc_cli.preprocessing import from_model_config
from emlc_cli.runtime.device import resolve_device


def load_student(run: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the student from its JSON config and safetensors weights."""
    state, config = load_model_files(run, run_folder.STUDENT)
    where = Path(run) / run_folder.config_file(run_folder.STUDENT)
    with _mismatch_is_one_line(where):
        if config.get("timm"):  # a fine-tuned timm backbone, rebuilt from its record (no download)
            model = rebuild_timm_classifier(config["timm"], config["num_classes"])
        else:
            model = build_classifier(config["architecture"], config["num_classes"], config["width"], config["small_stem"],
                                     in_features=config.get("in_features", 0))
        model.load_state_dict(state)
    frozen = config.get("frozen_backbone")
    if frozen:
        with _mismatch_is_one_line(Path(run) / run_folder.config_file(run_folder.BACKBONE)):
            backbone = rebuild_backbone(frozen, config["width"])
            backbone.load_state_dict(load_model_files(run, run_folder.BACKBONE)[0])
        parts = frozen.get("parts")
        model = (Views(backbone, parts, model) if parts else
                 FrozenFeatures(recorded_encoder(backbone, frozen, from_model_config(config)), model))
    return model.to(device).eval(), config


@contextlib.contextmanager
def _mismatch_is_one_line(config: Path) -> Iterator[None]:
    """A config that does not describe its weights (edited, or from another run) names the file."""
    try:
        yield
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"does not match its weights ({first[:160]})", path=config) from None


def readable_probs(model: torch.nn.Module, dataset: Any, config: dict[str, Any], device: torch.device,
                   where: Any) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(readable row indices, the model's softmax over them, (index, reason) of every unreadable row), every row
    prepared as the run was trained."""
    if isinstance(model, (Views, FrozenFeatures)):  # embedded a batch at a time, through the embedding store
        embedded = model.embed(dataset, device)
        keep = np.setdiff1d(np.arange(len(dataset)), [i for i, _ in embedded.unreadable])
        features = embedded.features[torch.as_tensor(keep, dtype=torch.long)]
        return keep, predict_probs(model.head, features, device), list(embedded.unreadable)
    images, bad = decode_as_trained(dataset, config)
    if images.ndim == 2 and images.shape[1] != config.get("in_features"):
        raise DataError(f"feature vectors of length {images.shape[1]}; the run was trained on length "
                        f"{config.get('in_features')}", path=where)
    keep = np.setdiff1d(np.arange(len(dataset)), [i for i, _ in bad])
    return keep, predict_probs(model, images[torch.as_tensor(keep, dtype=torch.long)], device, config=config), bad


def decode_as_trained(dataset: Any, config: dict[str, Any]) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """The images (or feature vectors) of `dataset` decoded as the run's model JSON says it was trained on them."""
    pre = from_model_config(config)
    return decode_images(dataset, pre.size, resize=pre.resize, crop_pct=pre.crop_pct, interpolation=pre.interpolation)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512,
                  config: dict[str, Any] | None = None) -> np.ndarray:
    """The model's softmax over `images` (N x C float32; N x 0 for no images), in eval-mode batches, normalised
    with the mean/std of the run's model JSON `config` (ImageNet's without one)."""
    pre = from_model_config(config or {"input_size": 1})
    batches = BatchMaker(device, "none", channels_last=False, mean=pre.mean, std=pre.std)
    parts = [torch.softmax(model(batches(images[idx], train=False)).float(), 1).cpu()
             for idx in ordered_batches(len(images), batch_size)]
    return torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros((0, 0), dtype=np.float32)


def predict_images(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512,
                   config: dict[str, Any] | None = None) -> np.ndarray:
    probs = predict_probs(model, images, device, batch_size, config)
    return probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)


def evaluate_student(run: Path, data: Any, device: str = "auto") -> dict[str, Any]:
    """Student accuracy and per-class precision/recall on data with true labels: an image folder, or any
    source emlc clean reads (a path, hf://owner/name, or a SourceSpec)."""
    torch_device = resolve_device(device)
    model, config = load_student(run, torch_device)
    dataset = load_source(data)
    check_model_input(dataset, (config.get("frozen_backbone") or config)["architecture"])
    unknown = [c for c in dataset.classes if c not in config["classes"]]
    if unknown:
        raise DataError(f"class '{unknown[0]}' is not a class of the run ({', '.join(config['classes'])})", path=data)
    truth = np.array([config["classes"].index(dataset.classes[l]) for l in dataset.labels])
    keep, probs, _ = readable_probs(model, dataset, config, torch_device, data)
    predicted = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    return {
        "accuracy": metrics.accuracy(predicted, truth[keep]), "images": int(len(keep)), "unreadable": len(dataset) - len(keep),
        "classes": config["classes"], "per_class": metrics.per_class(predicted, truth[keep], len(config["classes"])),
    }


def evaluate_truth(run: Path, truth_csv: Path) -> dict[str, Any]:
    """Given vs corrected label accuracy on the rows `truth_csv` covers, and "changed" as a noise detector."""
    rows = _corrected_rows(run)
    key = run_folder.manifest_key(run_folder.source_kind(run_folder.read_source_record(run, required=False)))
    names = {row[column] for row in rows.values() for column in ("label", "corrected_label")}
    truth = {}
    for path, label, row in read_path_label_csv(truth_csv, key=key):
        truth[path] = label if label in names else label.strip()
    covered = [p for p in truth if p in rows]
    if not covered:
        raise DataError(f"no row matches a path of the run's {run_folder.CORRECTED}", path=truth_csv)
    true = np.array([truth[p] for p in covered])
    given = np.array([rows[p]["label"] for p in covered])
    corrected = np.array([rows[p]["corrected_label"] for p in covered])
    noisy = np.array([rows[p]["split"] == "noisy" for p in covered])
    result = {"rows": len(covered), "given_accuracy": metrics.accuracy(given, true),
              "corrected_accuracy": metrics.accuracy(corrected, true)}
    result.update(metrics.detection(given != corrected, given != true))
    result["noisy_rows"] = int(noisy.sum())
    result["noisy_given_accuracy"] = metrics.accuracy(given[noisy], true[noisy])
    result["noisy_corrected_accuracy"] = metrics.accuracy(corrected[noisy], true[noisy])
    return result


SCORED_COLUMNS = ("path", "label", "corrected_label", "split")  # the columns of corrected.csv scored here


def _corrected_rows(run: Path) -> dict[str, dict[str, str]]:
    """corrected.csv by normalised path; a file edited out of shape is one line naming it, never a KeyError."""
    where = Path(run) / run_folder.CORRECTED
    try:
        records = run_folder.read_corrected(run)
    except (csv.Error, UnicodeDecodeError) as err:
        raise DataError(f"not a readable CSV ({type(err).__name__}: {str(err)[:120]})", path=where) from None
    if not records:
        raise DataError("has no rows", path=where)
    missing = [c for c in SCORED_COLUMNS if c not in records[0]]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; expected {','.join(SCORED_COLUMNS)}", path=where)
    for number, record in enumerate(records, start=2):
        if any(record.get(c) is None for c in SCORED_COLUMNS):
            raise DataError(f"expected {len(records[0])} fields", path=where, row=number)
    return {_run_key(record["path"]): record for record in records}


def _run_key(path: str) -> str:
    """A run's ids as truth manifests spell them: paths posix-normalised (ids are kept as they are)."""
    normal = posixpath.normpath(path) if path else path
    return normal if normal and not normal.startswith("..") else path
