"""FiftyOne's on-disk dataset format (`fo.types.FiftyOneDataset`, its JSON variant: DEST/samples.json and
DEST/metadata.json), written without fiftyone or its database: `emlc export RUN DEST --format fiftyone`, then
`fo.Dataset.from_dir(DEST, dataset_type=fo.types.FiftyOneDataset)`.

One sample per image of an image-folder run: `ground_truth` (the given label), `emlc` (emlc's label with its
confidence), `mistakenness` (1 - p(given label), from probs.npy), `changed`, `split`, `emlc_key` (the path under
DATA), and tags `to_verify`, `changed`, `verified` to filter on in the App. Embedded labels are serialised as
fiftyone serialises them (`_cls` names the label class); a metadata.json without `version` is what fiftyone's
importer reads as this JSON layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from emlc_cli._version import __version__
from emlc_cli.run_folder import layout as run_folder
from emlc_cli.export.rows import read_image_rows
from emlc_cli.errors import DataError

SAMPLES, METADATA = "samples.json", "metadata.json"
LABEL_CLASS = "Classification"


def samples(run: Path) -> list[dict[str, Any]]:
    """The run's images as FiftyOne sample dicts, in corrected.csv order."""
    root = run_folder.image_folder_root(run, "a FiftyOne export (samples point at image files)")
    rows = read_image_rows(run, root)
    classes = run_folder.read_json(Path(run) / run_folder.config_file(run_folder.STUDENT))["classes"]
    given_probs = _given_probs(run, rows, classes)
    to_verify = {r["path"] for r in run_folder.read_to_verify(run)}
    return [_sample(row, root, to_verify, p) for row, p in zip(rows, given_probs)]


def metadata(classes: list[str]) -> dict[str, Any]:
    """Dataset-level info: the class list (fiftyone reads `info.classes` into `dataset.default_classes`, which
    its evaluation uses) and who wrote the file."""
    return {"media_type": "image", "info": {"classes": classes, "written_by": f"emlc {__version__}"}}


def _sample(row: dict[str, str], root: Path, to_verify: set[str], given_prob: Optional[float]) -> dict[str, Any]:
    changed = row["changed"] == "1"
    tags = [t for t, on in (("to_verify", row["path"] in to_verify), ("changed", changed),
                            ("verified", row["split"] == "clean")) if on]
    sample = {"filepath": str((root / row["path"]).resolve()), "tags": tags,
              "ground_truth": {"_cls": LABEL_CLASS, "label": row["label"]},
              "emlc": {"_cls": LABEL_CLASS, "label": row["corrected_label"], "confidence": float(row["confidence"])},
              "changed": changed, "split": row["split"], "emlc_key": row["path"]}
    if given_prob is not None:
        sample["mistakenness"] = round(1.0 - given_prob, 6)
    return sample


def _given_probs(run: Path, rows: list[dict[str, str]], classes: list[str]) -> list[Optional[float]]:
    """p(given label) per row from probs.npy; None throughout for a run written before probs.npy existed."""
    if not (Path(run) / run_folder.PROBS).is_file():
        return [None] * len(rows)
    probs = run_folder.read_probs(run)
    index = {name: i for i, name in enumerate(classes)}
    if probs.shape != (len(rows), len(classes)):
        raise DataError(f"shape {probs.shape} does not match corrected.csv ({len(rows)} rows, {len(classes)} classes)",
                        path=Path(run) / run_folder.PROBS)
    return [float(probs[i, index[row["label"]]]) if row["label"] in index else None for i, row in enumerate(rows)]
