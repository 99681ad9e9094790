"""The run folder's format, in one place: every file name, the CSV columns, the readers, and the key clean and
truth manifests use for a run's rows.

Torch-free, so that `emlc review`, `emlc evaluate --truth`, `push` and `export` read a run without loading a
network. writer.py writes what is named here."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable

from emlc_cli.errors import DataError
from emlc_cli.jsonfile import read_json_file

CORRECTED = "corrected.csv"    # one row per image, sorted by path: CORRECTED_COLUMNS
TO_VERIFY = "to_verify.csv"    # the images to verify next, best first: TO_VERIFY_COLUMNS
SUMMARY = "summary.json"
SOURCE = "source.json"         # where the data came from (never a token), so the run's images can be reopened
RECIPE = "recipe.yaml"         # the resolved recipe
PROBS = "probs.npy"            # float32, one row per corrected.csv row, one column per class: PROBS_MEANING
PROBS_MEANING = ("class probabilities p(class | image) of the model the decision used (correct.source: the student "
                 "unless the recipe says otherwise), temperature-calibrated on the verified holdout, before the "
                 "student's fine-tune; in-sample for the noisy pool and the verified images it trained on, out of "
                 "sample for the verified holdout; with correct.cross_fit, out of sample for the noisy pool and "
                 "(correct.cross_fit_verified) for every verified image, each from the fold model that never saw it")
LABELS = "labels.npy"          # int64, one per corrected.csv row: the given label's column in PROBS (student.json classes)
REVIEW = "review.html"         # where `emlc review` writes its report unless told otherwise
STUDENT, TEACHER, BACKBONE = "student", "teacher", "backbone"  # model stems: STEM.safetensors + STEM.json
STATE_FILE = "training_state.pt"  # the resumable training state, kept only in the staging folder
MARKERS = {"run": ".emlc-run", "export": ".emlc-export"}  # written into every folder emlc creates
LEGACY_RUN = (SUMMARY, CORRECTED, SOURCE)  # a run folder from before the markers

CORRECTED_COLUMNS = ("path", "label", "corrected_label", "confidence", "changed", "split")
TO_VERIFY_COLUMNS = ("path", "label", "corrected_label", "confidence", "reason", "priority")

FOLDER_KINDS = ("imagefolder",)  # sources whose rows are files under a folder, named by path; all others use ids
LEGACY_KIND = "imagefolder"      # the kind of a run whose source.json does not say
NOT_A_RUN = "not found; is this an emlc run folder?"


def weights_file(stem: str) -> str:
    return f"{stem}.safetensors"


def config_file(stem: str) -> str:
    return f"{stem}.json"


def staging_path(out: Path) -> Path:
    """Where a run is built (and its resumable state kept) until it is complete: `.NAME.partial` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def lock_path(out: Path) -> Path:
    """The lock beside the staging folder `.NAME.partial`: `.NAME.partial.lock`."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial.lock")


# ---- the key rule -------------------------------------------------------------------------------------
def source_kind(record: dict[str, Any]) -> str:
    """The source kind a run's source.json records."""
    return record.get("kind", LEGACY_KIND)


def is_folder_kind(kind: str) -> bool:
    """Rows are files under one data folder (read directly by review, copied by export)."""
    return kind in FOLDER_KINDS


def image_folder_root(run: Path, needs: str) -> Path:
    """The data folder of an image-folder run (source.json); any other source is one DataError saying that
    `needs` (e.g. "a Label Studio export") needs image files."""
    record = read_source_record(run)
    if not is_folder_kind(source_kind(record)):
        raise DataError(f"{needs} needs a run on an image folder", path=run)
    return Path(record.get("location") or record["root"])


def manifest_key(kind: str) -> str:
    """The key column of clean, truth and decisions manifests for a source of this kind: `path` or `id`."""
    return "path" if is_folder_kind(kind) else "id"


# ---- readers ------------------------------------------------------------------------------------------
def read_probs(run: Path) -> "Any":
    """probs.npy as an N x C float32 array aligned with corrected.csv (numpy imported only here)."""
    import numpy as np

    path = Path(run) / PROBS
    if not path.is_file():
        raise DataError("not found (runs written before emlc wrote class probabilities lack it)", path=path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"not a numpy array file ({err})", path=path) from None


def read_corrected(run: Path, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """corrected.csv as dicts; a missing `required` column is one DataError naming it."""
    path = Path(run) / CORRECTED
    if not path.is_file():
        raise DataError(NOT_A_RUN, path=path)
    rows = _dict_rows(path)
    missing = [c for c in required if rows and c not in rows[0]]
    if missing:
        raise DataError(f"column '{missing[0]}' is missing", path=path)
    return rows


def read_to_verify(run: Path) -> list[dict[str, str]]:
    """to_verify.csv as dicts in file order (best first); [] for a run without one."""
    path = Path(run) / TO_VERIFY
    return _dict_rows(path) if path.is_file() else []


def _dict_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read: {err}", path=path) from None


def read_json(path: Path, required: bool = True) -> dict[str, Any]:
    """A JSON object of the run folder ({} when absent and not `required`); anything else is one DataError."""
    if not path.is_file():
        if required:
            raise DataError(NOT_A_RUN, path=path)
        return {}
    data = read_json_file(path, "cannot read JSON")
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", path=path)
    return data


def read_source_record(run: Path, required: bool = True) -> dict[str, Any]:
    """A run's source.json ({} for a run without one, unless required)."""
    path = Path(run) / SOURCE
    if not path.is_file():
        if not required:
            return {}
        raise DataError("not found; is this a run folder written by emlc clean?", path=path)
    return read_json(path)


def read_recipe_text(run: Path) -> str:
    """recipe.yaml as written ("" for a run without one)."""
    path = Path(run) / RECIPE
    return path.read_text(encoding="utf-8") if path.is_file() else ""
