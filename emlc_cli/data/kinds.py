"""Which kind of source a location is, and the reader for each: the one table from kind to reader.

Adding a source kind is one reader module (a `detect(location) -> bool` and a `read(spec, kind) ->
LabeledImages`) and one row of KINDS. Kinds are tried in table order; the first whose detector accepts the
location reads it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

from emlc_cli.data import huggingface, imagefolder, npy
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.stream import STREAMABLE, read_stream
from emlc_cli.data.spec import HUB_PREFIX, INHERITED, SourceSpec, as_spec, relocated, spec_from_record
from emlc_cli.errors import DataError
from emlc_cli.run_folder.layout import is_folder_kind, read_source_record


@dataclass(frozen=True)
class Kind:
    name: str                                              # recorded in source.json as `kind`
    detect: Callable[[str], bool]                          # location -> is it this kind?
    read: Callable[[SourceSpec, str], LabeledImages]       # (spec, kind name) -> LabeledImages with `origin` set


KINDS: tuple[Kind, ...] = (
    Kind("hub", huggingface.is_hub, huggingface.read_dataset),
    Kind("npy", npy.is_npy_file, npy.load_npy),
    Kind("hf_disk", huggingface.is_saved_dataset, huggingface.read_dataset),
    Kind("metadata_folder", huggingface.is_metadata_folder, huggingface.read_dataset),
    Kind("parquet", huggingface.is_parquet, huggingface.read_dataset),
    Kind("imagefolder", imagefolder.is_image_folder, imagefolder.read_image_folder),  # last: any other folder
)
BY_NAME = {kind.name: kind for kind in KINDS}


def detect_kind(location: str) -> str:
    """The name of the first kind in KINDS that accepts `location`."""
    found = next((kind.name for kind in KINDS if kind.detect(location)), None)
    if found is not None:
        return found
    path = Path(location)
    if not path.exists():
        raise DataError("data not found", path=path)
    raise DataError("unsupported data file (expected a folder, a .parquet or a .npy file, or hf://owner/name)", path=path)


def load_source(data: Any) -> LabeledImages:
    """The dispatcher: any supported source (a SourceSpec, or a path / hf:// string) -> LabeledImages, with
    `origin` set for source.json."""
    spec = as_spec(data)
    kind = detect_kind(spec.location)
    if spec.streaming:
        if kind not in STREAMABLE:
            raise DataError(f"--stream reads hf:// datasets and parquet data, not {kind} data (read it without --stream)",
                            path=spec.location)
        return read_stream(spec, kind)
    return BY_NAME[kind].read(spec, kind)


def spec_like_run(record: dict[str, Any], data: str, labels_csv: Any = None, **given: Any) -> SourceSpec:
    """A spec for new data read the way the run read its own: columns and config the caller leaves out (None)
    are the run's. An image folder takes none of them."""
    if is_folder_kind(detect_kind(str(data))):
        return SourceSpec(str(data), labels_csv=str(labels_csv) if labels_csv else None)
    inherited = {k: record[k] for k in INHERITED if record.get(k) is not None}
    chosen = {**inherited, **{k: v for k, v in given.items() if v is not None}}
    return SourceSpec(str(data), labels_csv=str(labels_csv) if labels_csv else None, **chosen)


MOVED = "pass --data NEW_LOCATION if it moved"


def run_source(run: Path, data: Optional[str] = None) -> dict[str, Any]:
    """RUN/source.json with the data where `data` says it is now; a local source that is not there is one line
    that names --data."""
    record = relocated(read_source_record(run), data)
    location = str(record.get("location") or record.get("root") or "")
    if location and not location.startswith(HUB_PREFIX) and not Path(location).exists():
        raise DataError("data not found" + ("" if data else f" (where the run read it); {MOVED}"), path=location)
    return record


def open_run_images(run: Path, record: Optional[dict[str, Any]] = None) -> Optional[Callable[[str], Image.Image]]:
    """id -> PIL image of a run's source (for `emlc review`), or None for feature-vector sources. A streamed
    source is opened whole: a review opens images in any order."""
    spec = spec_from_record(record if record is not None else read_source_record(run))
    data = load_source(replace(spec, streaming=False))
    if data.features is not None:
        return None
    index = data.index_of()
    return lambda key: data.open(index[key])
