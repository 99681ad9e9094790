"""The Python API: `clean`, `evaluate`, `predict` and `load_run`, for notebooks and scripts.

The same calls the CLI makes, with inputs the CLI cannot take: a `datasets.Dataset` / `DatasetDict`, a pandas
DataFrame, or arrays of images or feature vectors with their labels; a verified set as a mapping or a DataFrame.
In-memory inputs are written once to a temporary folder in a form emlc reads (a save_to_disk dataset, or a
.npy file with its labels) and removed afterwards, so a run folder made from them records a location that no
longer exists: `review`, `export` and `push` then need the data saved somewhere (`Dataset.save_to_disk`).
Library code never prints; progress goes to the `progress` callback (the events of `emlc_cli.train.events`)."""
from __future__ import annotations

import csv
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.api_checks import (DATA, FEATURES, LABELS, VERIFIED, bars_kept, checked_features, checked_labels,
                                 checked_verified_frame, no_progress_bars, user_names)
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import DataError

DataLike = Any  # str | Path | SourceSpec | datasets.Dataset | DatasetDict | pandas.DataFrame | np.ndarray
VerifiedLike = Union[str, Path, Sequence[Union[str, Path]], Mapping[Any, Any], Any]


@dataclass
class Run:
    """A run's results, as `clean` returns them and `load_run` reads them back.

    One entry per row of corrected.csv (sorted by path or id): `rows` (the path or id), `given` and `labels`
    (corrected) class names, `confidence`, `changed`, `split` ("noisy" or "clean"), and `probs` (N x C,
    run_folder.PROBS_MEANING; None for runs written before it existed); `given_index` and `labels_index` are the
    given and corrected labels as ints in `classes` order (the columns of `probs`). `to_verify`: what to verify next, best
    first, with the reason. `path`: the run folder, or None when `clean` ran without `out`."""

    classes: list[str]
    rows: list[str]
    given: list[str]
    labels: list[str]
    confidence: np.ndarray
    changed: np.ndarray
    split: list[str]
    probs: Optional[np.ndarray]
    to_verify: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def given_index(self) -> np.ndarray:
        """The given labels as ints in `classes` order, the columns of `probs` (what cleanlab's `labels=` takes:
        its Datalab sorts string labels by name, which need not be this order)."""
        return self._indices(self.given)

    @property
    def labels_index(self) -> np.ndarray:
        """The corrected labels as ints in `classes` order."""
        return self._indices(self.labels)

    def _indices(self, names: list[str]) -> np.ndarray:
        column = {name: i for i, name in enumerate(self.classes)}
        return np.array([column[name] for name in names], dtype=np.int64)

    def corrected(self) -> dict[str, str]:
        """{path or id: corrected label}."""
        return dict(zip(self.rows, self.labels))

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"key": self.rows, "label": self.given, "corrected_label": self.labels,
                             "confidence": self.confidence, "changed": self.changed, "split": self.split})


def load_run(path: Union[str, Path]) -> Run:
    """Read a run folder written by `emlc clean` (or `clean(..., out=...)`)."""
    path = Path(path)
    rows = run_folder.read_corrected(path, required=run_folder.CORRECTED_COLUMNS)
    config = run_folder.read_json(path / run_folder.config_file(run_folder.STUDENT))
    summary = run_folder.read_json(path / run_folder.SUMMARY)
    probs = run_folder.read_probs(path) if (path / run_folder.PROBS).is_file() else None
    to_verify = run_folder.read_to_verify(path)
    return Run(classes=list(config["classes"]), rows=[r["path"] for r in rows], given=[r["label"] for r in rows],
               labels=[r["corrected_label"] for r in rows], confidence=np.array([float(r["confidence"]) for r in rows]),
               changed=np.array([r["changed"] == "1" for r in rows]), split=[r["split"] for r in rows], probs=probs,
               to_verify=to_verify, summary=summary, path=path)


def clean(data: DataLike, verified: VerifiedLike, *, recipe: Any = "quick", overrides: Sequence[str] = (),
          out: Union[str, Path, None] = None, device: str = "auto", seed: int = 0,
          progress: Optional[Callable[[Any], None]] = None, labels: Any = None, overwrite: bool = False,
          resume: bool = False, strict: bool = False, **columns: Any) -> Run:
    """Clean `data` with the verified set `verified`; return the corrected labels and what the run measured.

    `data`: a path or hf:// id (every source the CLI reads; `labels=` is `--labels`), a SourceSpec, a
    `datasets.Dataset`/`DatasetDict`, a pandas DataFrame, or an array (N x D features, or N x H x W x 3 uint8
    images) with `labels=` (class names or ints, one per row; rows are ids 0..N-1). `verified`: a manifest path
    (or several), a mapping {path or id: label}, or a DataFrame with those two columns. `recipe`: a shipped name, a
    YAML path or a Recipe; `overrides` as on the command line (`"train.epochs=3"`). `columns`: `image_column`,
    `label_column`, `id_column`, `feature_column`, `split`, `config`, `revision` as the CLI options. Without `out`
    the run folder is temporary and `Run.path` is None. Inputs are validated as `emlc clean` validates them."""
    from emlc_cli.prepare import preflight

    with tempfile.TemporaryDirectory(prefix="emlc-api-") as scratch, user_names(Path(scratch)), bars_kept():
        spec = source_spec(data, Path(scratch), labels, **columns)
        manifests = verified_manifests(verified, Path(scratch), spec)
        target = Path(out) if out is not None else Path(scratch) / "run"
        checked = preflight.check_clean(spec, manifests, recipe, list(overrides), target, device, seed, overwrite, resume)
        run = run_checked(checked, device, progress, strict)
    if run is not None and out is None:
        run.path = None
    return run  # type: ignore[return-value]  # None only on the non-main ranks of a torchrun launch


def run_checked(checked: Any, device: str = "auto", progress: Optional[Callable[[Any], None]] = None,
                strict: bool = False) -> Optional[Run]:
    """Train on inputs `preflight.check_clean` validated, as `clean` and `emlc clean` both do (the CLI validates
    before torch is imported). The Run on the main process; None on the other ranks of a torchrun launch, which
    share the work while rank 0 alone writes the run folder."""
    from emlc_cli.runtime import distributed
    from emlc_cli import pipeline

    result = pipeline.clean(checked.spec, checked.manifests, checked.out, checked.recipe, device, checked.seed,
                            checked.overwrite, on_event=progress, resume=checked.resume, strict=strict,
                            prepared=checked.prepared)
    return load_run(result.out) if distributed.is_main_process() else None


def evaluate(run: Union[str, Path], *, data: DataLike = None, truth: Union[str, Path, None] = None,
             device: str = "auto", labels: Any = None, **columns: Any) -> dict[str, Any]:
    """Score a run: its student on labelled `data` (any form `clean` takes), or its corrected labels against a
    `truth` manifest (path,label or id,label). Exactly one of the two."""
    from emlc_cli.student import evaluation
    from emlc_cli.data.kinds import spec_like_run

    if (data is None) == (truth is None):
        raise DataError("pass exactly one of data= or truth=")
    if truth is not None:
        return evaluation.evaluate_truth(Path(run), Path(truth))
    with tempfile.TemporaryDirectory(prefix="emlc-api-") as scratch, user_names(Path(scratch)), bars_kept():
        spec = source_spec(data, Path(scratch), labels, **columns)
        record = run_folder.read_source_record(Path(run), required=False)
        return evaluation.evaluate_student(Path(run), spec_like_run(record, spec.location, spec.labels_csv, **_chosen(spec)), device)


def predict(run: Union[str, Path], data: DataLike, *, device: str = "auto", labels: Any = None, **columns: Any) -> "Predictions":
    """The run's student on new data: labels and class probabilities, with the run's preprocessing. `data`: any
    form `clean` takes (labels, if any, are ignored), or a folder of images without class folders."""
    from emlc_cli.student import inference

    with tempfile.TemporaryDirectory(prefix="emlc-api-") as scratch, user_names(Path(scratch)), bars_kept():
        spec = source_spec(data, Path(scratch), labels, allow_unlabelled=True, **columns)
        classes, keys, probs, left_out = inference.predict_run(Path(run), spec, device)
    best = probs.argmax(1)
    return Predictions(classes, keys, [classes[i] for i in best], probs[np.arange(len(best)), best], probs, left_out)


@dataclass
class Predictions:
    """`keys` (path or id), `labels` (class names), `confidence`, `probs` (N x C, `classes` order); `left_out`:
    the rows that could not be read, as (path or id, reason), which have no prediction."""

    classes: list[str]
    keys: list[str]
    labels: list[str]
    confidence: np.ndarray
    probs: np.ndarray
    left_out: list[tuple[str, str]] = field(default_factory=list)


# ---- inputs -------------------------------------------------------------------------------------------
def source_spec(data: DataLike, scratch: Path, labels: Any = None, allow_unlabelled: bool = False, **columns: Any) -> SourceSpec:
    """Any accepted form of `data` -> a SourceSpec emlc reads (in-memory forms written under `scratch`)."""
    if isinstance(data, SourceSpec):
        return data
    if isinstance(data, (str, Path)):
        return SourceSpec(str(data), labels_csv=str(labels) if labels is not None else None, **columns)
    if isinstance(data, np.ndarray):
        return _array_source(data, labels, scratch, allow_unlabelled, **columns)
    label_column = columns.get("label_column", "label")
    if _is_dataframe(data):
        if allow_unlabelled:  # labels are ignored there: a NaN among them is no reason to refuse
            data = data.assign(**{label_column: _placeholder_labels(len(data))})
        return _dataframe_source(data, scratch, **columns)
    if _is_datasets(data):
        if allow_unlabelled and type(data).__name__ == "Dataset" and label_column not in data.column_names:
            data = data.add_column(label_column, _placeholder_labels(len(data)))
        with no_progress_bars():
            data.save_to_disk(str(scratch / DATA))
        return SourceSpec(str(scratch / DATA), **columns)
    raise DataError(f"data of type {type(data).__name__} is not supported (a path, a datasets.Dataset, a pandas "
                    "DataFrame or a numpy array)")


def _placeholder_labels(n: int) -> list[str]:
    """Labels for rows to predict, which have none: never read, but a dataset reader wants two classes."""
    return [f"?{i % 2}" for i in range(n)]


def _array_source(array: np.ndarray, labels: Any, scratch: Path, allow_unlabelled: bool, **columns: Any) -> SourceSpec:
    if allow_unlabelled:  # labels, if any, are ignored
        labels = _placeholder_labels(len(array))
    elif labels is None:
        raise DataError("an array needs labels= (one class name or int per row)")
    labels = checked_labels(labels, "labels")
    if len(labels) != len(array):
        raise DataError(f"labels= has {len(labels)} entries for {len(array)} rows")
    if array.ndim == 2:
        np.save(scratch / FEATURES, checked_features(array))
        _write_rows(scratch / LABELS, ("id", "label"), [(i, label) for i, label in enumerate(labels)])
        return SourceSpec(str(scratch / FEATURES), labels_csv=str(scratch / LABELS))
    if array.ndim == 4 and array.shape[-1] == 3 and array.dtype == np.uint8:
        import datasets

        encoded = [{"bytes": _png(image), "path": None} for image in array]
        with no_progress_bars():
            table = datasets.Dataset.from_dict({"image": encoded, "label": [str(x) for x in labels]},
                                               features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}))
            table.save_to_disk(str(scratch / DATA))
        return SourceSpec(str(scratch / DATA), image_column="image", label_column="label")
    raise DataError(f"an array of shape {array.shape} ({array.dtype}) is neither N x D features nor N x H x W x 3 uint8 images")


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_cell(value: Any) -> Any:
    if isinstance(value, (str, Path)):
        return {"bytes": None, "path": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value), "path": None}
    if hasattr(value, "save"):  # a PIL image
        return {"bytes": _png(np.asarray(value.convert("RGB"))), "path": None}
    return value


def _dataframe_source(frame: Any, scratch: Path, **columns: Any) -> SourceSpec:
    """A DataFrame with a label column and an image column (paths, bytes or PIL images) or a feature column."""
    import datasets

    image_column, label_column = columns.get("image_column"), columns.get("label_column") or "label"
    if label_column in frame.columns:
        checked_labels(frame[label_column], f"data['{label_column}']")
    if image_column in frame.columns:  # paths or bytes as Image storage (struct<bytes, path>), which casts cleanly
        frame = frame.assign(**{image_column: frame[image_column].map(_image_cell)})
    with no_progress_bars():
        table = _table(datasets, frame)
        if image_column and not isinstance(table.features.get(image_column), datasets.Image):
            table = table.cast_column(image_column, datasets.Image())
        table.save_to_disk(str(scratch / DATA))
    return SourceSpec(str(scratch / DATA), **columns)


def _table(datasets: Any, frame: Any) -> Any:
    """The DataFrame as a datasets.Dataset; a column Arrow cannot type is one DataError."""
    import pyarrow as pa

    try:
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as err:
        reason = " ".join(str(part) for part in (err.args or (err,)))
        raise DataError(f"data: a DataFrame column cannot be stored as a table ({reason[:160]})") from None


def verified_manifests(verified: VerifiedLike, scratch: Path, spec: SourceSpec) -> list[Path]:
    """Manifest paths, a mapping {key: label} or a two-column DataFrame -> manifest files emlc reads."""
    if isinstance(verified, (str, Path)):
        return [Path(verified)]
    if isinstance(verified, Sequence) and all(isinstance(v, (str, Path)) for v in verified):
        return [Path(v) for v in verified]
    key = run_folder.manifest_key(_kind(spec))
    if _is_dataframe(verified):
        verified = checked_verified_frame(verified)
    if not isinstance(verified, Mapping):
        raise DataError(f"verified of type {type(verified).__name__} is not supported (a manifest path, a mapping "
                        "{path or id: label} or a DataFrame)")
    checked_labels(list(verified.values()), "verified", list(verified))
    target = scratch / VERIFIED
    _write_rows(target, (key, "label"), [(str(k), str(v)) for k, v in verified.items()])
    return [target]


def _kind(spec: SourceSpec) -> str:
    from emlc_cli.data.kinds import detect_kind

    return detect_kind(spec.location)


def _chosen(spec: SourceSpec) -> dict[str, Any]:
    return {k: getattr(spec, k) for k in ("config", "split", "revision", "image_column", "label_column", "id_column",
                                          "feature_column")}


def _write_rows(path: Path, header: tuple[str, str], rows: list[tuple[Any, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "iloc")


def _is_datasets(value: Any) -> bool:
    return type(value).__name__ in ("Dataset", "DatasetDict") and hasattr(value, "save_to_disk")

