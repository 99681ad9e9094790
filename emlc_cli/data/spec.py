"""SourceSpec: where a dataset is and how to read it, and the source part of a run's source.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

HUB_PREFIX = "hf://"
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
    streaming: bool = False  # --stream: read with datasets' streaming (data/stream.py)

    def __fspath__(self) -> str:
        return self.location

    def __str__(self) -> str:
        return self.location

    @property
    def is_remote(self) -> bool:
        return self.location.startswith(HUB_PREFIX)

    @property
    def repo_id(self) -> str:
        return self.location[len(HUB_PREFIX):].strip("/")

    @property
    def uses_features(self) -> bool:
        return self.feature_column is not None or self.location.lower().endswith(".npy")

    def run_name(self) -> str:
        """A default run folder name: the repo name, the file stem or the folder name."""
        if self.is_remote:
            return self.repo_id.split("/")[-1] or "hub"
        path = Path(self.location).resolve()
        return path.stem if path.is_file() else path.name


def as_spec(data: Any) -> SourceSpec:
    """A SourceSpec as it is, or a path / hf:// string read with the defaults."""
    return data if isinstance(data, SourceSpec) else SourceSpec(str(data))


def spec_from_record(record: dict[str, Any]) -> SourceSpec:
    """The SourceSpec a run's source.json describes (the split actually used, not the one asked for)."""
    names = set(SourceSpec.__dataclass_fields__)
    fields = {k: v for k, v in record.items() if k in names}
    return SourceSpec(**{**fields, "location": record.get("location") or record["root"]})


def origin_record(spec: SourceSpec, kind: str, rows: int, **extra: Any) -> dict[str, Any]:
    """The source part of source.json: everything that reopens the source read-only, never a token."""
    record = asdict(spec)
    record["location"] = spec.location if spec.is_remote else str(Path(spec.location).resolve())
    if record["labels_csv"]:
        record["labels_csv"] = str(Path(record["labels_csv"]).resolve())
    return {**record, "kind": kind, "rows": rows, **extra}


def relocated(record: dict[str, Any], data: Optional[str]) -> dict[str, Any]:
    """A run's source record with its data at `data` now (`--data NEW_LOCATION`); a labels file that lay inside
    the old data folder moves with it. Unchanged when `data` is None."""
    if not data:
        return record
    new = data if data.startswith(HUB_PREFIX) else str(Path(data).resolve())
    old = record.get("location") or record.get("root")
    moved = {**record, "location": new, "root": new}
    labels = record.get("labels_csv")
    if labels and old and not str(old).startswith(HUB_PREFIX) and Path(labels).is_relative_to(old):
        moved["labels_csv"] = str(Path(new) / Path(labels).relative_to(old))
    return moved
