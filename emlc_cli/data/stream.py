"""Streamed sources (`--stream`): a Hub dataset or parquet data read with `datasets`' streaming, never downloaded
whole or converted to an Arrow cache.

Two passes, each reading only the columns it needs. The first reads the label (and id, feature) columns of every
source shard in order: the rows' labels, ids and each shard's length. The decode pass reads the image column, a
range of rows at a time, in order: a range that does not continue the last one restarts at the source shard
holding its first row, so each process of a torchrun launch reads only the shards of its own rows (an even split
of rows, so that every process fills its own rows of one shared decoded cache; `split_dataset_by_node` would
hand out examples without their global row numbers).
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from emlc_cli.data.columns import encode_labels, unique_ids
from emlc_cli.data.huggingface import (at_resolved_revision, dataset_error, image_column_of, pick_split, reported_by_emlc,
                                       require_column, vectors)
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.spec import SourceSpec, origin_record
from emlc_cli.errors import DataError

log = logging.getLogger(__name__)
STREAMABLE = ("hub", "parquet")
BATCH = 256
SHA = 40


def read_stream(spec: SourceSpec, kind: str) -> LabeledImages:
    """A streamed source -> LabeledImages: labels, ids (and feature vectors) read now, images when decoded. A Hub
    revision is resolved to its commit first, and that commit is streamed."""
    spec = at_resolved_revision(spec, kind)
    full = _stream(spec, kind)
    image_column = None if spec.feature_column else image_column_of(full, spec.image_column, spec.location)
    wanted = _first_pass_columns(full, spec)
    columns, lengths = _read_columns(_stream(spec, kind, wanted), wanted, spec.location)
    labels, classes, values, label_type = encode_labels(columns[spec.label_column], spec.label_column,
                                                        full.features[spec.label_column], spec.location)
    ids = (unique_ids([None if v is None else str(v) for v in columns[spec.id_column]], spec.id_column, spec.location)
           if spec.id_column else [str(i) for i in range(len(labels))])
    features = vectors(columns[spec.feature_column], spec.feature_column, spec.location) if spec.feature_column else None
    reader = None if image_column is None else StreamImages(_stream(spec, kind, [image_column], image=image_column),
                                                            image_column, lengths, spec.location)
    origin = origin_record(replace(spec, image_column=image_column), kind, len(ids), label_type=label_type, label_values=values)
    return LabeledImages(Path(spec.repo_id) if kind == "hub" else Path(spec.location), ids, labels, classes,
                         open_image=reader.open if reader else None, features=features, kind=kind, origin=origin,
                         fingerprint=_fingerprint(spec, kind), read_blobs=reader.blobs if reader else None)


def _first_pass_columns(stream: Any, spec: SourceSpec) -> list[str]:
    """The label, id and feature columns, each checked to exist."""
    named = ((spec.label_column, "--label-column"), (spec.id_column, "--id-column"), (spec.feature_column, "--feature-column"))
    for name, option in named:
        if name is not None:
            require_column(stream, name, option, spec.location)
    return [name for name, _ in named if name is not None]


def _stream(spec: SourceSpec, kind: str, columns: Optional[list[str]] = None, image: Optional[str] = None) -> Any:
    """The split's IterableDataset, reduced to `columns`; `image`: that column's cells left encoded."""
    import datasets

    datasets.disable_progress_bars()
    try:
        with reported_by_emlc():
            stream = _load(datasets, spec, kind, columns)
        if isinstance(stream, dict) or isinstance(stream, datasets.IterableDatasetDict):
            stream = stream[pick_split(list(stream), spec.split, spec.location)]
        if stream.features is None:
            stream = stream._resolve_features()  # a source without stored features: inferred from its first rows
        if stream.features is None:
            raise DataError("cannot tell the stream's columns", path=spec.location)
        if columns is not None:
            stream = stream.select_columns(columns)
        if image is not None:
            stream = stream.cast_column(image, datasets.Image(decode=False))
    except DataError:
        raise
    except Exception as err:  # datasets raises FileNotFoundError, ValueError, DatasetNotFoundError, ...
        raise dataset_error("cannot stream the dataset", err, spec.location) from None
    return stream


def _load(datasets: Any, spec: SourceSpec, kind: str, columns: Optional[list[str]]) -> Any:
    """The stream; parquet data reads only `columns` from its files (for the Hub, when its builder is parquet)."""
    projected = {"columns": columns} if columns is not None else {}
    if kind == "hub":
        load = lambda **extra: datasets.load_dataset(spec.repo_id, name=spec.config, split=spec.split,  # noqa: E731
                                                     revision=spec.revision, streaming=True, **extra)
        try:
            return load(**projected)
        except (TypeError, ValueError):  # not parquet: no `columns` key; select_columns after loading does it
            if not projected:
                raise
            return load()
    path = Path(spec.location)
    files = str(path) if path.is_file() else [str(p) for p in _parquet_files(path)]
    return datasets.load_dataset("parquet", data_files={spec.split or "train": files}, split=spec.split or "train",
                                 streaming=True, **projected)


def _parquet_files(folder: Path) -> list[Path]:
    """The shards of a parquet folder: at the top, else one level down (one folder per split is not told apart)."""
    return sorted(folder.glob("*.parquet")) or sorted(folder.glob("*/*.parquet"))


def _read_columns(stream: Any, columns: list[str], where: str) -> tuple[dict[str, list], list[int]]:
    """Every row's values of `columns`, shard after shard, and each source shard's row count."""
    values: dict[str, list] = {name: [] for name in columns}
    lengths = []
    for index in range(stream.num_shards):
        before = len(values[columns[0]])
        for batch in _batches(stream.shard(num_shards=stream.num_shards, index=index), where):
            for name in columns:
                values[name].extend(batch[name])
        lengths.append(len(values[columns[0]]) - before)
    return values, lengths


def _batches(part: Any, where: str) -> Iterator[dict[str, list]]:
    """The batches of one source shard; a file that cannot be read part-way is one error naming the source."""
    batches = part.iter(batch_size=BATCH)
    while True:
        try:
            with reported_by_emlc():
                batch = next(batches)
        except StopIteration:
            return
        except Exception as err:  # pyarrow / datasets / the network, mid-stream
            raise dataset_error("reading the stream failed", err, where) from None
        yield batch


def _fingerprint(spec: SourceSpec, kind: str) -> Optional[str]:
    """What the streamed pixels depend on, for the image store: a Hub commit, or the parquet files' sizes and
    modification times. None (decode for this run only) for a Hub revision that is not a resolved commit."""
    if kind == "hub":
        revision = spec.revision or ""
        return f"stream-hub-{revision}" if len(revision) == SHA and all(c in "0123456789abcdef" for c in revision) else None
    path = Path(spec.location)
    digest = hashlib.sha256(b"stream-parquet\n")
    for file in [path] if path.is_file() else _parquet_files(path):
        info = os.stat(file)
        digest.update(f"{file.resolve()}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class StreamImages:
    """Encoded image cells of a streamed column, read a range of rows at a time, in order."""

    def __init__(self, stream: Any, column: str, lengths: list[int], where: str) -> None:
        self.stream, self.column, self.where = stream, column, where
        self.starts = np.cumsum([0, *lengths])
        self._cells: Optional[Iterator[Any]] = None
        self._next = -1
        self._paths: dict[int, str] = {}  # rows of the last range that hold a file path instead of bytes

    def blobs(self, rows: range) -> list[Optional[bytes]]:
        if rows.start != self._next or self._cells is None:
            self._cells = self._from(rows.start)
        cells = list(itertools.islice(self._cells, len(rows)))
        if len(cells) < len(rows):
            raise DataError(f"the stream ended at row {rows.start + len(cells)} of {self.starts[-1]}: the source changed "
                            "while it was read", path=self.where)
        self._next = rows.stop
        self._paths = {i: c["path"] for i, c in zip(rows, cells) if c and not c.get("bytes") and c.get("path")}
        return [(c or {}).get("bytes") or None for c in cells]

    def open(self, i: int) -> Image.Image:
        """Row i of the last range read, where it names a file instead of holding bytes."""
        path = self._paths.get(i)
        if path is None:
            raise ValueError("no image in this row")
        if not Path(path).is_file():  # a FIFO would block the decoder forever
            raise ValueError(f"not a regular file: {path}")
        return Image.open(path)

    def _from(self, start: int) -> Iterator[Any]:
        """Cells from row `start` on: from the source shard holding it, skipping only within that shard."""
        first = int(np.searchsorted(self.starts, start, side="right") - 1)
        count = self.stream.num_shards
        for index in range(first, count):
            part = self.stream.shard(num_shards=count, index=index)
            if index == first and start > self.starts[first]:
                part = part.skip(int(start - self.starts[first]))
            for batch in _batches(part, self.where):
                yield from batch[self.column]
