"""The persistent embedding store: a source embedded once by a frozen backbone is kept on disk, so a second round
(`--clean decisions.csv`), a rerun, `--resume` or another torchrun rank embeds nothing.

Beside the decoded-image store (cache/store.py: same EMLC_CACHE_DIR, `none` turns both off), entries live under
`embeddings/<key>/` (`embeddings.npy` float16 or float32 [N, D], `unreadable.json`, `info.json`). The key
hashes what the features depend on: the source's identity (store.source_identity), the backbone and the
digest of its weights (the Hub commit or the file's sha256), the preprocessing, flip averaging and the
decoder. Changed weights or preprocessing give another key; an entry is written in a staging folder and
renamed into place when complete. `EMLC_CACHE_MAX_GB` bounds one entry (embeddings are a small fraction of the
pixels they replace); `emlc cache ls` lists the entries beside the decoded images and `emlc cache rm` removes them.
Torch-free."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from emlc_cli.cache import store
from emlc_cli.run_folder.disk import path_kind

log = logging.getLogger(__name__)
EMBEDDINGS, UNREADABLE, INFO = "embeddings.npy", "unreadable.json", "info.json"
ENTRY_FILES = frozenset({EMBEDDINGS, UNREADABLE, INFO})


@dataclass
class Entry:
    key: str
    path: Path
    info: dict[str, Any]
    unreadable: list[tuple[int, str]]

    @property
    def array(self) -> Path:
        return self.path / EMBEDDINGS

    @property
    def bytes(self) -> int:
        return sum(_size(self.path / name) for name in ENTRY_FILES)

    @property
    def last_used(self) -> float:
        return _mtime(self.path / INFO)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def entries() -> list[Entry]:
    """Every readable entry, most recently used first (what `emlc cache ls` lists)."""
    base = root()
    if base is None or path_kind(base) != "folder":
        return []
    found = [_read_entry(p) for p in base.iterdir() if store.KEY_NAME.fullmatch(p.name)]
    return sorted((e for e in found if e is not None), key=lambda e: -e.last_used)


def remove(entry: Entry) -> None:
    """Delete an entry, only if its folder holds nothing but an entry's files."""
    store.remove_ours(entry.path, ENTRY_FILES)


def make_room(needed: int) -> bool:
    """Remove the least recently used entries, decoded images and embeddings alike, until `needed` more bytes fit
    under EMLC_CACHE_MAX_GB, which caps both stores together; False if they never can."""
    cap = store.max_bytes()
    if needed > cap:
        return False
    kept = sorted([*store.entries(include_damaged=True), *entries()], key=lambda e: -e.last_used)
    total = sum(e.bytes for e in kept)
    while kept and total + needed > cap:
        oldest = kept.pop()
        log.info("removing cache %s (least recently used) to stay under %.1f GB", oldest.path, cap / 2**30)
        (remove if isinstance(oldest, Entry) else store.remove)(oldest)
        total -= oldest.bytes
    return True


def root() -> Optional[Path]:
    """Where entries live (beside the image store), or None when the store is off."""
    images = store.root()
    return None if images is None else images.parent / "embeddings"


def key_for(ds: Any, encoder: dict[str, Any]) -> Optional[str]:
    """The entry key of `ds` (a LabeledImages) under `encoder` (backbone, weights digest, preprocessing, flip);
    None when the source cannot be fingerprinted or the store is inside the data folder."""
    identity = store.source_identity(ds)
    base = root()
    if identity is None or base is None or _inside(base, ds):
        return None
    from PIL import __version__ as pillow

    parts = {"source": identity, "encoder": encoder, "decoder": store.DECODE_VERSION, "pillow": pillow}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _inside(base: Path, ds: Any) -> bool:
    """EMLC_CACHE_DIR inside an image folder being read: emlc never writes there."""
    return ds.open_image is None and base.resolve().is_relative_to(Path(ds.root).resolve())


def lookup(key: str, rows: int) -> Optional[Entry]:
    """The complete entry for `key` holding `rows` rows, marked as just used; a damaged one is removed."""
    base = root()
    if base is None or not (base / key / INFO).is_file():
        return None
    entry = _read_entry(base / key)
    if entry is None or not _intact(entry.array, rows):
        log.warning("embedding cache %s is damaged or incomplete; embedding again", base / key)
        store.remove_ours(base / key, ENTRY_FILES)
        return None
    os.utime(entry.path / INFO)
    return entry


def _intact(path: Path, rows: int) -> bool:
    import numpy as np

    try:
        mapped = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return mapped.dtype in (np.float16, np.float32) and mapped.ndim == 2 and mapped.shape[0] == rows


def _read_entry(path: Path) -> Optional[Entry]:
    """The entry in `path`, its files read as the image store reads its own (regular files only, never a link or a
    FIFO, bounded, rows checked); None when anything about it is off."""
    if path_kind(path) != "folder" or path_kind(path / EMBEDDINGS) != "file":
        return None
    info, problem = store.read_json_bounded(path / INFO, store.META_BYTES)
    rows = info.get("rows") if isinstance(info, dict) else None
    if problem or not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
        return None
    unreadable, problem = store.read_json_bounded(path / UNREADABLE, store.UNREADABLE_BYTES)
    if problem or store.unreadable_problem(unreadable, rows):
        return None
    return Entry(path.name, path, info, [(int(i), str(reason)) for i, reason in unreadable])


def save(key: str, features: Any, unreadable: list[tuple[int, str]], info: dict[str, Any]) -> Optional[Entry]:
    """Write an entry (float16 when every value fits, else float32) through a staging folder; None, with a
    warning, when the store cannot be written (the run goes on with its features in memory)."""
    import numpy as np

    base = root()
    if base is None or not make_room(features.size * 2):
        return None  # the store is off, or these alone exceed EMLC_CACHE_MAX_GB: they last for this run only
    staged = None
    try:
        store.remove_stale(base, ENTRY_FILES)
        staged = store.staging_folder(base)
        half = features.astype(np.float16)
        np.save(staged / EMBEDDINGS, half if np.isfinite(half).all() else features.astype(np.float32))
        (staged / UNREADABLE).write_text(json.dumps(unreadable), encoding="utf-8")
        (staged / INFO).write_text(json.dumps({**info, "created": time.time()}, indent=1), encoding="utf-8")
        os.rename(staged, base / key)
    except OSError as err:  # unwritable, full, or another process committed the same key first
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        if not (base / key / INFO).is_file():
            log.warning("cannot keep the embeddings in %s (%s); they last for this run only", base, err)
    return _read_entry(base / key)
