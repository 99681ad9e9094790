"""Hugging Face datasets, parquet and .npy feature sources, each read into LabeledImages.

Sources are opened read-only. Arrow-backed datasets stay memory-mapped: images are decoded one row at a
time when asked for, and only the label, id and (for feature datasets) feature columns are read eagerly.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from emlc_cli.data.hub_reach import check_hub_reachable
from emlc_cli.data.manifest import read_path_label_csv
from emlc_cli.data.sources import LabeledImages, load_image_folder
from emlc_cli.errors import DataError

log = logging.getLogger(__name__)
HUB_PREFIX = "hf://"
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
FOLDER_KINDS = ("imagefolder",)  # sources whose manifests name files by path; all others use `id,label`
INHERITED = ("config", "image_column", "label_column", "id_column", "feature_column")  # what evaluate reuses from a run


@dataclass(frozen=True)
class SourceSpec:
    """Where a dataset is and how to read it. Path-like, so it travels wherever a data path does.

    `location` is a folder, a .parquet/.npy file, or `hf://owner/name`. Never holds a token."""

    location: str
    labels_csv: Optional[str] = None
    config: Optional[str] = None
    split: Optional[str] = None
    revision: Optional[str] = None
    image_column: Optional[str] = None
    label_column: str = "label"
    id_column: Optional[str] = None
    feature_column: Optional[str] = None
    command: Optional[str] = None

    def __fspath__(self) -> str:
        return self.location

    def __str__(self) -> str:
        return self.location

    @property
    def repo_id(self) -> str:
        return self.location[len(HUB_PREFIX):].strip("/")

    @property
    def uses_features(self) -> bool:
        return self.feature_column is not None or self.location.lower().endswith(".npy")

    def run_name(self) -> str:
        """A default run folder name: the repo name, the file stem or the folder name."""
        if self.location.startswith(HUB_PREFIX):
            return self.repo_id.split("/")[-1] or "hub"
        path = Path(self.location).resolve()
        return path.stem if path.is_file() else path.name

    def kind(self) -> str:
        return detect_kind(self.location)


def as_spec(data: Any, labels_csv: Path | str | None = None) -> SourceSpec:
    spec = data if isinstance(data, SourceSpec) else SourceSpec(str(data))
    if labels_csv is not None and spec.labels_csv is None:
        spec = replace(spec, labels_csv=str(labels_csv))
    return spec


def spec_from_record(record: dict[str, Any]) -> SourceSpec:
    """The SourceSpec a run's source.json describes (the split actually used, not the one asked for)."""
    names = set(SourceSpec.__dataclass_fields__)
    fields = {k: v for k, v in record.items() if k in names}
    return SourceSpec(**{**fields, "location": record.get("location") or record["root"]})


def detect_kind(location: str) -> str:
    """hub | npy | parquet | hf_disk | metadata_folder | imagefolder."""
    if location.startswith(HUB_PREFIX):
        return "hub"
    path = Path(location)
    if not path.exists():
        raise DataError("data not found", path=path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".npy"):
            return suffix[1:]
        raise DataError("unsupported data file (expected a folder, a .parquet or a .npy file, or hf://owner/name)", path=path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf_disk"
    if any((path / name).is_file() for name in METADATA_FILES) or any(path.glob(f"*/{METADATA_FILES[0]}")):
        return "metadata_folder"
    if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
        return "parquet"
    return "imagefolder"


def load_source(data: Any, labels_csv: Path | str | None = None) -> LabeledImages:
    """The dispatcher: any supported source -> LabeledImages (with `origin` set for source.json)."""
    spec = as_spec(data, labels_csv)
    kind = spec.kind()
    if kind == "imagefolder":
        if spec.feature_column:
            raise DataError(f"--feature-column {spec.feature_column}: an image folder has no columns", path=spec.location)
        images = load_image_folder(Path(spec.location), Path(spec.labels_csv) if spec.labels_csv else None)
        images.origin = _record(spec, kind, len(images))
        return images
    if kind == "npy":
        return load_npy(spec)
    dataset, split = open_dataset(spec, kind)
    return from_dataset(dataset, replace(spec, split=split), kind)


def manifest_key(data: LabeledImages) -> str:
    """The key column of clean/truth manifests for this source: `path` for folders, else `id`."""
    return "path" if data.kind in FOLDER_KINDS else "id"


def check_model_input(data: LabeledImages, backbone: str) -> None:
    if data.features is not None and backbone != "mlp":
        raise DataError(f"feature vectors need the MLP backbone (--recipe features, or model.backbone=mlp); "
                        f"the model is '{backbone}'", path=data.origin.get("location", data.root))
    if data.features is None and backbone == "mlp":
        raise DataError("model.backbone=mlp needs feature vectors: pass --feature-column (or a .npy file)",
                        path=data.origin.get("location", data.root))


def open_dataset(spec: SourceSpec, kind: str | None = None) -> tuple[Any, str]:
    """The Arrow-backed `datasets.Dataset` of one split, and that split's name."""
    import datasets

    datasets.disable_progress_bars()
    kind = kind or spec.kind()
    try:
        loaded = _load(datasets, spec, kind)
    except DataError:
        raise
    except Exception as err:  # datasets raises FileNotFoundError, ValueError, DatasetNotFoundError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise DataError(f"cannot load the dataset ({type(err).__name__}: {first})", path=spec.location) from None
    if isinstance(loaded, datasets.Dataset):
        return loaded, spec.split or str(loaded.split or "train")
    split = pick_split(list(loaded), spec.split, spec.location)
    return loaded[split], split


def _load(datasets: Any, spec: SourceSpec, kind: str) -> Any:
    if kind == "hf_disk":
        return datasets.load_from_disk(spec.location)
    if kind == "hub":
        check_hub_reachable(spec.location)
        return datasets.load_dataset(spec.repo_id, name=spec.config, split=spec.split, revision=spec.revision)
    if kind == "parquet" and Path(spec.location).is_file():
        return datasets.load_dataset("parquet", data_files={"train": spec.location}, split=spec.split)
    return datasets.load_dataset(str(Path(spec.location).resolve()), name=spec.config, split=spec.split)


def pick_split(splits: list[str], wanted: str | None, where: str) -> str:
    if wanted is not None:
        if wanted not in splits:
            raise DataError(f"split '{wanted}' not found; splits: {', '.join(splits)}", path=where)
        return wanted
    if len(splits) == 1:
        return splits[0]
    if "train" in splits:
        log.info("%s has splits %s; using 'train' (pass --split to choose)", where, ", ".join(splits))
        return "train"
    raise DataError(f"several splits ({', '.join(splits)}); pass --split", path=where)


def from_dataset(dataset: Any, spec: SourceSpec, kind: str) -> LabeledImages:
    """A `datasets.Dataset` -> LabeledImages: labels and ids read now, images decoded lazily."""
    column = _require_column(dataset, spec.label_column, "--label-column", spec.location)
    labels, classes, values, label_type = encode_labels(_column(dataset, column), column, dataset.features[column], spec.location)
    features, open_image, image_column = None, None, None
    if spec.feature_column:
        features = feature_matrix(dataset, _require_column(dataset, spec.feature_column, "--feature-column", spec.location), spec.location)
    else:
        image_column = image_column_of(dataset, spec.image_column, spec.location)
        open_image = lazy_images(dataset, image_column)
    ids = _ids(dataset, spec, kind, image_column)
    root = Path(spec.location) if kind != "hub" else Path(spec.repo_id)
    resolved = replace(spec, image_column=image_column, revision=_revision(spec, kind))
    origin = {**_record(resolved, kind, len(ids)), "label_type": label_type, "label_values": values}
    return LabeledImages(root, ids, labels, classes, open_image=open_image, features=features, kind=kind, origin=origin)


def _require_column(dataset: Any, name: str, option: str, where: str) -> str:
    if name not in dataset.column_names:
        raise DataError(f"no column '{name}' (columns: {', '.join(dataset.column_names)}); pass {option}", path=where)
    return name


def _column(dataset: Any, name: str) -> list[Any]:
    """One column as Python values, through the indices mapping, without decoding other columns."""
    return dataset.with_format("arrow", columns=[name])[:][name].to_pylist()


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


def _ids(dataset: Any, spec: SourceSpec, kind: str, image_column: Optional[str]) -> list[str]:
    """The id column's values; for a folder with metadata.csv its file names; else the row index."""
    if spec.id_column is not None:
        column = _require_column(dataset, spec.id_column, "--id-column", spec.location)
        return unique_ids([None if v is None else str(v) for v in _column(dataset, column)], column, spec.location)
    if kind == "metadata_folder" and image_column:
        return file_names(dataset, image_column, Path(spec.location))
    return [str(i) for i in range(len(dataset))]


def file_names(dataset: Any, column: str, folder: Path) -> list[str]:
    """Rows of an imagefolder named by their file relative to the folder, as metadata.csv's file_name."""
    from datasets import Image as ImageFeature

    cells = dataset.select_columns([column]).cast_column(column, ImageFeature(decode=False))
    paths = cells.with_format("arrow")[:][column].combine_chunks().field("path").to_pylist()
    root = folder.resolve()
    try:
        return unique_ids([Path(p).resolve().relative_to(root).as_posix() for p in paths], "file_name", str(folder))
    except (TypeError, ValueError):  # a row without a local file: fall back to the row index
        return [str(i) for i in range(len(dataset))]


def unique_ids(ids: list[Optional[str]], column: str, where: str) -> list[str]:
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if value is None or value == "":
            raise DataError(f"column '{column}' is empty in row {row}", path=where)
        if value in seen:
            raise DataError(f"id '{value}' of column '{column}' appears in rows {seen[value]} and {row}; ids must be unique", path=where)
        seen[value] = row
    return list(seen)


def feature_matrix(dataset: Any, column: str, where: str) -> np.ndarray:
    """A fixed-length list/array column -> float32 [N, D]; ragged, empty or non-finite vectors are refused."""
    try:
        matrix = np.asarray(dataset.with_format("numpy", columns=[column])[:][column], dtype=np.float32)
    except (TypeError, ValueError) as err:
        first = str(err).splitlines()[0][:120]
        raise DataError(f"column '{column}' must hold fixed-length float vectors ({first})", path=where) from None
    return check_features(matrix, f"column '{column}'", where)


def check_features(matrix: np.ndarray, what: str, where: str) -> np.ndarray:
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise DataError(f"{what} must hold fixed-length float vectors (got shape {matrix.shape})", path=where)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise DataError(f"{what}: row {bad[0]} has a NaN or infinite value ({len(bad)} rows in all)", path=where)
    return np.array(matrix, dtype=np.float32, order="C")  # a writable copy (torch refuses read-only memory)


def image_column_of(dataset: Any, wanted: str | None, where: str) -> str:
    """`wanted` (must be an Image feature) or the first Image feature."""
    from datasets import Image as ImageFeature

    if wanted is not None:
        _require_column(dataset, wanted, "--image-column", where)
        if not isinstance(dataset.features[wanted], ImageFeature):
            raise DataError(f"column '{wanted}' is not an Image feature ({dataset.features[wanted]})", path=where)
        return wanted
    found = [name for name, feature in dataset.features.items() if isinstance(feature, ImageFeature)]
    if not found:
        raise DataError(f"no Image column (columns: {', '.join(dataset.column_names)}); "
                        "pass --image-column, or --feature-column for feature vectors", path=where)
    return found[0]


def lazy_images(dataset: Any, column: str) -> Any:
    """open_image(i): row i's image, read from the memory-mapped table only when asked for."""
    from datasets import Image as ImageFeature

    raw = dataset.select_columns([column]).cast_column(column, ImageFeature(decode=False))

    def open_image(i: int) -> Image.Image:
        cell = raw[i][column]
        if cell is None:
            raise ValueError("no image in this row")
        if cell.get("bytes"):
            return Image.open(io.BytesIO(cell["bytes"]))
        if not Path(cell["path"]).is_file():  # a FIFO would block the decoder forever
            raise ValueError(f"not a regular file: {cell['path']}")
        return Image.open(cell["path"])

    return open_image


def load_npy(spec: SourceSpec) -> LabeledImages:
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
    origin = {**_record(replace(spec, feature_column=spec.feature_column or "features"), "npy", len(ids)),
              "label_type": label_type, "label_values": distinct}
    return LabeledImages(Path(spec.location), ids, labels, classes, features=matrix, kind="npy", origin=origin)


def _rows_in_array_order(ids: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Ids that are exactly the row numbers 0..N-1 (the default row names) label those rows, in any order;
    other ids name the rows in file order."""
    if set(ids) != {str(i) for i in range(len(ids))}:
        return ids, labels
    order = np.argsort(np.array([int(i) for i in ids]), kind="stable")
    return [ids[i] for i in order], labels[order]


def _revision(spec: SourceSpec, kind: str) -> Optional[str]:
    """For the Hub, the commit actually read, so push/evaluate reopen the very same data (best effort)."""
    if kind != "hub":
        return spec.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(spec.repo_id, revision=spec.revision).sha or spec.revision
    except Exception as err:  # offline or no access: keep what was asked for
        log.info("could not resolve the revision of %s: %s", spec.repo_id, type(err).__name__)
        return spec.revision


def _record(spec: SourceSpec, kind: str, rows: int) -> dict[str, Any]:
    """The source part of source.json: everything that reopens the source read-only, never a token."""
    record = asdict(spec)
    record["location"] = spec.location if kind == "hub" else str(Path(spec.location).resolve())
    if record["labels_csv"]:
        record["labels_csv"] = str(Path(record["labels_csv"]).resolve())
    return {**record, "kind": kind, "rows": rows}


def read_source_record(run: Path, required: bool = True) -> dict[str, Any]:
    """A run's source.json ({} for a run without one, unless required)."""
    path = Path(run) / "source.json"
    if not path.is_file():
        if not required:
            return {}
        raise DataError("not found; is this a run folder written by emlc clean?", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DataError(f"not valid JSON ({err})", path=path) from None


def spec_like_run(record: dict[str, Any], data: str, labels_csv: Any = None, **given: Any) -> SourceSpec:
    """A spec for new data read the way the run read its own: columns and config the caller leaves out (None)
    are the run's. An image folder takes none of them."""
    if detect_kind(str(data)) in FOLDER_KINDS:
        return SourceSpec(str(data), labels_csv=str(labels_csv) if labels_csv else None)
    inherited = {k: record[k] for k in INHERITED if record.get(k) is not None}
    chosen = {**inherited, **{k: v for k, v in given.items() if v is not None}}
    return SourceSpec(str(data), labels_csv=str(labels_csv) if labels_csv else None, **chosen)


def open_run_images(run: Path) -> Optional[Callable[[str], Image.Image]]:
    """id -> PIL image of a run's source (for `emlc review`), or None for feature-vector sources."""
    data = load_source(spec_from_record(read_source_record(run)))
    if data.features is not None:
        return None
    index = data.index_of()
    return lambda key: data.open(index[key])
