"""Sources read through `datasets`: a Hub dataset (`hf://owner/name`), a save_to_disk folder, an imagefolder
with metadata.csv, and parquet files or folders of shards, each read into LabeledImages.

Sources are opened read-only. Arrow-backed datasets stay memory-mapped: images are decoded one row at a
time when asked for, and only the label, id and (for feature datasets) feature columns are read eagerly.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from emlc_cli.data.columns import check_features, encode_labels, unique_ids
from emlc_cli.data.hub_reach import check_hub_reachable
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.spec import HUB_PREFIX, SourceSpec, origin_record
from emlc_cli.errors import DataError

log = logging.getLogger(__name__)
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


# ---- which locations are ours (see data/kinds.py for the order they are tried in) ---------------------
def is_hub(location: str) -> bool:
    return location.startswith(HUB_PREFIX)


def is_saved_dataset(location: str) -> bool:
    """A Dataset / DatasetDict.save_to_disk folder."""
    path = Path(location)
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def is_metadata_folder(location: str) -> bool:
    """An imagefolder with metadata.csv (or .jsonl / .parquet), at the top or in split folders."""
    path = Path(location)
    return any((path / name).is_file() for name in METADATA_FILES) or any(path.glob(f"*/{METADATA_FILES[0]}"))


def is_parquet(location: str) -> bool:
    """A .parquet file, or a folder of parquet shards (at the top or one level down)."""
    path = Path(location)
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    return any(path.glob("*.parquet")) or any(path.glob("*/*.parquet"))


def read_dataset(spec: SourceSpec, kind: str) -> LabeledImages:
    """The source reader (see data/kinds.py) for every kind that `datasets` opens. A Hub revision is resolved to
    its commit before loading, and that commit is loaded: a push in between cannot change what is read."""
    spec = at_resolved_revision(spec, kind)
    dataset, split = open_dataset(spec, kind)
    return from_dataset(dataset, replace(spec, split=split), kind)


def at_resolved_revision(spec: SourceSpec, kind: str) -> SourceSpec:
    """`spec` with a Hub revision resolved to its commit (a quick one-line error first when the Hub is out of reach)."""
    if kind == "hub":
        check_hub_reachable(spec.location)  # one quick line when offline, before any lookup waits for a timeout
    return replace(spec, revision=_revision(spec, kind))


def open_dataset(spec: SourceSpec, kind: str) -> tuple[Any, str]:
    """The Arrow-backed `datasets.Dataset` of one split, and that split's name."""
    import datasets

    datasets.disable_progress_bars()
    try:
        with reported_by_emlc():
            loaded = _load(datasets, spec, kind)
    except DataError:
        raise
    except Exception as err:  # datasets raises FileNotFoundError, ValueError, DatasetNotFoundError, ...
        raise dataset_error("cannot load the dataset", err, spec.location) from None
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


@contextlib.contextmanager
def reported_by_emlc() -> Iterator[None]:
    """datasets logs a file it cannot read at ERROR and then raises; emlc reports the error once, in one line."""
    logger = logging.getLogger("datasets")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def dataset_error(what: str, err: Exception, where: str) -> DataError:
    """One line for an error from datasets: its own cause where datasets wraps it in a generic message."""
    cause = err.__cause__ if type(err).__name__ == "DatasetGenerationError" and err.__cause__ is not None else err
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
    return DataError(f"{what} ({type(cause).__name__}: {first})", path=where)


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
    column = require_column(dataset, spec.label_column, "--label-column", spec.location)
    labels, classes, values, label_type = encode_labels(_column(dataset, column), column, dataset.features[column], spec.location)
    features, open_image, image_column, read_blobs = None, None, None, None
    if spec.feature_column:
        features = feature_matrix(dataset, require_column(dataset, spec.feature_column, "--feature-column", spec.location), spec.location)
    else:
        image_column = image_column_of(dataset, spec.image_column, spec.location)
        raw = encoded_images(dataset, image_column)
        open_image, read_blobs = lazy_images(raw, image_column), image_blobs(raw, image_column)
    ids = _ids(dataset, spec, kind, image_column)
    root = Path(spec.location) if kind != "hub" else Path(spec.repo_id)
    resolved = replace(spec, image_column=image_column)
    origin = origin_record(resolved, kind, len(ids), label_type=label_type, label_values=values)
    return LabeledImages(root, ids, labels, classes, open_image=open_image, features=features, kind=kind, origin=origin,
                         fingerprint=getattr(dataset, "_fingerprint", None), read_blobs=read_blobs)


def require_column(dataset: Any, name: str, option: str, where: str) -> str:
    if name not in dataset.column_names:
        raise DataError(f"no column '{name}' (columns: {', '.join(dataset.column_names)}); pass {option}", path=where)
    return name


def _column(dataset: Any, name: str) -> list[Any]:
    """One column as Python values, through the indices mapping, without decoding other columns."""
    return dataset.with_format("arrow", columns=[name])[:][name].to_pylist()


def _ids(dataset: Any, spec: SourceSpec, kind: str, image_column: Optional[str]) -> list[str]:
    """The id column's values; for a folder with metadata.csv its file names; else the row index."""
    if spec.id_column is not None:
        column = require_column(dataset, spec.id_column, "--id-column", spec.location)
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


def feature_matrix(dataset: Any, column: str, where: str) -> np.ndarray:
    """A fixed-length list/array column -> float32 [N, D]; ragged, empty or non-finite vectors are refused."""
    return vectors(dataset.with_format("numpy", columns=[column])[:][column], column, where)


def vectors(values: Any, column: str, where: str) -> np.ndarray:
    """A column's values (one vector per row) -> float32 [N, D], refused as feature_matrix says."""
    try:
        matrix = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as err:
        first = str(err).splitlines()[0][:120]
        raise DataError(f"column '{column}' must hold fixed-length float vectors ({first})", path=where) from None
    return check_features(matrix, f"column '{column}'", where)


def image_column_of(dataset: Any, wanted: str | None, where: str) -> str:
    """`wanted` (must be an Image feature) or the first Image feature."""
    from datasets import Image as ImageFeature

    if wanted is not None:
        require_column(dataset, wanted, "--image-column", where)
        if not isinstance(dataset.features[wanted], ImageFeature):
            raise DataError(f"column '{wanted}' is not an Image feature ({dataset.features[wanted]})", path=where)
        return wanted
    found = [name for name, feature in dataset.features.items() if isinstance(feature, ImageFeature)]
    if not found:
        raise DataError(f"no Image column (columns: {', '.join(dataset.column_names)}); "
                        "pass --image-column, or --feature-column for feature vectors", path=where)
    return found[0]


def encoded_images(dataset: Any, column: str) -> Any:
    """The image column alone, undecoded: {bytes, path} cells, which both readers below take."""
    from datasets import Image as ImageFeature

    return dataset.select_columns([column]).cast_column(column, ImageFeature(decode=False))


def lazy_images(raw: Any, column: str) -> Any:
    """open_image(i): row i's image from `raw` (encoded_images), read from the memory-mapped table only when asked for."""

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


def image_blobs(raw: Any, column: str) -> Any:
    """read_blobs(rows): the stored bytes of a slice of rows of `raw` (encoded_images), read as one Arrow slice
    (through the indices mapping) instead of row by row; None for rows that hold a path instead, which
    `lazy_images` opens."""
    table = raw.with_format("arrow")

    def read_blobs(rows: range) -> list[Optional[bytes]]:
        cells = table[rows.start: rows.stop][column].combine_chunks()
        return [b or None for b in cells.field("bytes").to_pylist()] if len(cells) else []

    return read_blobs


def _revision(spec: SourceSpec, kind: str) -> Optional[str]:
    """For the Hub, the commit a revision (default: the main branch) points at now, so that it is what gets loaded
    and recorded, and push/evaluate reopen the very same data (best effort: offline, what was asked for)."""
    if kind != "hub":
        return spec.revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(spec.repo_id, revision=spec.revision).sha or spec.revision
    except Exception as err:  # offline or no access: keep what was asked for
        log.info("could not resolve the revision of %s: %s", spec.repo_id, type(err).__name__)
        return spec.revision
