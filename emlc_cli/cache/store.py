"""The persistent decoded-image store: a source decoded once at one image size is kept on disk and memory-mapped
by later runs, `--clean decisions.csv` rounds and the other processes of a torchrun launch on the same node.

Location: `EMLC_CACHE_DIR` (default `$XDG_CACHE_HOME/emlc`, else `~/.cache/emlc`), entries under `images/<key>/`
(`images.npy` uint8 [N, 3, S, S], `unreadable.json`, `info.json`); `EMLC_CACHE_DIR=none` turns it off. Size cap:
`EMLC_CACHE_MAX_GB` (default 50): the least recently used entries are removed to make room, and a source
larger than the cap is decoded for the run only. The key is a fingerprint of what the pixels depend on: the
source (an image folder's file listing with sizes and modification times; a dataset's location, split,
revision and `datasets` fingerprint), the image size and resize (`data.resize`), a pretrained model's crop fraction and interpolation, and the decoder (DECODE_VERSION, Pillow's version).
Entries are written into a staging folder and renamed into place when complete; staging folders of killed
processes are removed at start. An entry's metadata is validated where it is read (`_read_entry`) and its pixels
against the SHA-256 recorded at commit when a run opens it (about 2.4 s per GB here); a damaged entry is a stale
cache: decoded again, listed as invalid by `emlc cache ls`. Torch-free (`emlc cache ls` answers without importing torch)."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from emlc_cli.run_folder.disk import path_kind, read_regular
from emlc_cli.errors import UsageError
from emlc_cli.preprocessing import INTERPOLATIONS
from emlc_cli.run_folder.locks import process_alive

log = logging.getLogger(__name__)
DECODE_VERSION = "rgb-white-alpha-bilinear-draft-2"  # change whenever decode_images gives other pixels for the same file
IMAGES, UNREADABLE, INFO = "images.npy", "unreadable.json", "info.json"
ENTRY_FILES = frozenset({IMAGES, UNREADABLE, INFO})  # what an entry folder holds (the embedding store has its own)
DEFAULT_MAX_GB = 50.0
MAX_GB = 1e9  # a petabyte: beyond any disk, and still an exact integer of bytes
META_BYTES = 1 << 20  # info.json is a few hundred bytes
UNREADABLE_BYTES = 1 << 30  # [row, reason] pairs: ~100 bytes each, at most one per row
STAGING_PREFIX = ".emlc-cache-"
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]  # pids are only meaningful on one host
# .emlc-cache-<pid>-<host tag>-<mkdtemp's 8 characters>: exactly what staging_folder creates, nothing else
STAGING_NAME = re.compile(r"\.emlc-cache-(\d+)-([0-9a-f]{8})-[a-z0-9_]{8}")
KEY_NAME = re.compile(r"[0-9a-f]{64}")


@dataclass
class Entry:
    key: str
    path: Path
    bytes: int
    info: dict[str, Any]
    unreadable: list[tuple[int, str]]
    problem: str = ""  # why the entry cannot be used ("" when it can): it is decoded again, and `cache ls` says so

    @property
    def images(self) -> Path:
        return self.path / IMAGES

    @property
    def last_used(self) -> float:
        try:
            return (self.path / INFO).stat().st_mtime
        except OSError:
            return 0.0


def root() -> Optional[Path]:
    """Where entries live, or None when the store is off."""
    chosen = os.environ.get("EMLC_CACHE_DIR", "").strip()
    if chosen.lower() in ("none", "off", "0"):
        return None
    base = Path(chosen) if chosen else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emlc"
    return base / "images"


def max_bytes() -> int:
    """EMLC_CACHE_MAX_GB in bytes: a finite number of gigabytes, 0 or more (unset or empty: 50)."""
    raw = os.environ.get("EMLC_CACHE_MAX_GB", "").strip()
    try:
        gigabytes = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        gigabytes = math.nan
    if not 0 <= gigabytes <= MAX_GB:
        raise UsageError(f"EMLC_CACHE_MAX_GB={raw!r:.40}: give the image cache's size cap in gigabytes, a number from 0 "
                         f"to {MAX_GB:.0f} (e.g. EMLC_CACHE_MAX_GB=50)")
    return int(gigabytes * 2**30)


# ---- keys ---------------------------------------------------------------------------------------------
def key_for(ds: Any, size: int, resize: str = "stretch", crop_pct: float = 1.0,
            interpolation: str = "bilinear") -> Optional[str]:
    """The entry key of `ds` (a LabeledImages) decoded at `size` px; None when its pixels cannot be fingerprinted.
    The defaults ("stretch", the whole image, bilinear) add nothing to the key, so entries written before
    `data.resize` and a pretrained model's own preprocessing (crop fraction, interpolation) stay valid."""
    identity = source_identity(ds)
    if identity is None:
        return None
    from PIL import __version__ as pillow

    parts = {"source": identity, "size": size, "decoder": DECODE_VERSION, "pillow": pillow}
    if resize != "stretch":
        parts["resize"] = resize
    if crop_pct != 1.0:
        parts["crop_pct"] = crop_pct
    if interpolation != "bilinear":
        parts["interpolation"] = interpolation
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def source_identity(ds: Any) -> Optional[str]:
    """What the decoded pixels of every row depend on, hashed: for files read from disk their listing with size
    and modification time; for a `datasets` table its fingerprint and where it came from, with the row ids."""
    if ds.features is not None:
        return None
    digest = hashlib.sha256()
    if ds.open_image is None:
        base = str(Path(ds.root).resolve())
        digest.update(f"folder\0{base}\n".encode())
        digest.update("\n".join(f"{rel}\0{_stat_line(base + os.sep + rel)}" for rel in ds.paths).encode())
        return digest.hexdigest()
    fingerprint = ds.fingerprint
    if not fingerprint:
        return None
    where = {k: ds.origin.get(k) for k in ("kind", "location", "config", "split", "revision", "image_column")}
    digest.update(json.dumps({"table": fingerprint, **where}, sort_keys=True).encode())
    digest.update("\n".join(ds.paths).encode())
    return digest.hexdigest()


def _stat_line(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size}\0{stat.st_mtime_ns}"


# ---- entries ------------------------------------------------------------------------------------------
def lookup(key: str, shape: tuple[int, ...]) -> Optional[Entry]:
    """The usable entry for `key` holding an array of `shape`, marked as just used; a damaged one is removed (the
    run decodes again): metadata that is not what `commit` writes, or pixels that are not those it recorded."""
    base = root()
    if base is None or path_kind(base / key) == "missing":
        return None
    entry = _read_entry(base / key)
    problem = entry.problem or _pixels_problem(entry, shape, check_digest=True)
    if problem:
        log.warning("image cache %s is damaged or incomplete (%s); decoding again", entry.path, problem)
        remove_ours(entry.path)
        return None
    os.utime(entry.path / INFO)
    return entry


def _pixels_problem(entry: Entry, shape: tuple[int, ...], check_digest: bool) -> str:
    """Why the entry's images.npy is not the array of `shape` it recorded ("" when it is)."""
    import numpy as np

    if entry.info["shape"] != list(shape):
        return f"{INFO}: key 'shape' is {entry.info['shape']}, expected {list(shape)}"
    try:
        mapped = np.load(entry.images, mmap_mode="r")
    except (OSError, ValueError) as err:
        return f"{IMAGES}: {err}"
    if mapped.dtype != np.uint8 or mapped.shape != tuple(shape):
        return f"{IMAGES}: holds {mapped.dtype} {list(mapped.shape)}, expected uint8 {list(shape)}"
    recorded = entry.info.get("sha256")  # absent in entries written before the digest: those are not checked
    if check_digest and recorded is not None and _sha256(entry.images) != recorded:
        return f"{IMAGES}: its SHA-256 differs from the one recorded when it was written (changed since)"
    return ""


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_entry(path: Path) -> Entry:
    """The entry in `path`, its metadata validated once, here: a problem is recorded in it, never raised."""
    if path_kind(path) != "folder":
        return Entry(path.name, path, 0, {}, [], "not a folder (a link or a file is never followed or removed)")
    if path_kind(path / IMAGES) != "file":
        return Entry(path.name, path, 0, {}, [], f"{IMAGES}: missing, or not a regular file")
    size = (path / IMAGES).lstat().st_size
    info, problem = read_json_bounded(path / INFO, META_BYTES)
    problem = problem or _info_problem(info)
    if problem:
        return Entry(path.name, path, size, info if isinstance(info, dict) else {}, [], problem)
    unreadable, problem = read_json_bounded(path / UNREADABLE, UNREADABLE_BYTES)
    problem = problem or unreadable_problem(unreadable, info["rows"])
    if problem:
        return Entry(path.name, path, size, info, [], problem)
    return Entry(path.name, path, size, info, [(int(i), reason) for i, reason in unreadable])


def read_json_bounded(path: Path, limit: int) -> tuple[Any, str]:
    """(value, "") or (None, why not): a regular file (never a link, FIFO or device) of at most `limit` bytes."""
    try:
        return json.loads(read_regular(path, limit).decode("utf-8")), ""
    except (OSError, ValueError, RecursionError) as err:
        why = "nested too deeply" if isinstance(err, RecursionError) else getattr(err, "strerror", None) or str(err)
        return None, f"{path.name}: cannot be read ({why[:80]})"


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


INFO_KEYS: dict[str, tuple[Any, str]] = {  # what commit() writes: key -> (check, what it must be)
    "rows": (_count, "a whole number, 0 or more"),
    "size": (lambda v: _count(v) and v > 0, "a positive whole number"),
    "shape": (lambda v: isinstance(v, list), "[rows, 3, size, size]"),
    "source": (lambda v: isinstance(v, str), "a string"),
    "kind": (lambda v: isinstance(v, str), "a string"),
    "resize": (lambda v: v in (None, "stretch", "crop"), "'stretch' or 'crop'"),  # absent before data.resize
    "crop_pct": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.1 <= v <= 2),
                 "a number in [0.1, 2]"),  # absent for the whole image
    "interpolation": (lambda v: v is None or v in INTERPOLATIONS, "an interpolation name"),  # absent for bilinear
    "sha256": (lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None),
               "64 hexadecimal digits"),  # absent in entries written before the digest
}


def _info_problem(info: Any) -> str:
    if not isinstance(info, dict):
        return f"{INFO}: not a JSON object"
    for key, (valid, form) in INFO_KEYS.items():
        if not valid(info.get(key)):
            return f"{INFO}: key '{key}' must be {form}, got {_short(info.get(key))}"
    if info["shape"] != [info["rows"], 3, info["size"], info["size"]]:
        return f"{INFO}: key 'shape' must be [rows, 3, size, size], got {_short(info['shape'])}"
    return ""


def unreadable_problem(unreadable: Any, rows: int) -> str:
    """unreadable.json: [row, reason] pairs, each row of the entry at most once."""
    if not isinstance(unreadable, list):
        return f"{UNREADABLE}: not a JSON list"
    seen: set[int] = set()
    for item in unreadable:
        if not (isinstance(item, list) and len(item) == 2 and _count(item[0]) and item[0] < rows
                and item[0] not in seen and isinstance(item[1], str)):
            return f"{UNREADABLE}: {_short(item)} is not a [row, reason] pair naming one of its {rows} rows once"
        seen.add(item[0])
    return ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def entries(include_damaged: bool = False) -> list[Entry]:
    """Every usable entry (with `include_damaged`, also those whose metadata is not what commit writes: their
    `problem` says why), most recently used first."""
    base = root()
    if base is None or not base.is_dir():
        return []
    found = [_read_entry(p) for p in base.iterdir() if KEY_NAME.fullmatch(p.name) and path_kind(p) == "folder"]
    return sorted((e for e in found if include_damaged or not e.problem), key=lambda e: -e.last_used)


def remove(entry: Entry) -> None:
    remove_ours(entry.path)


def remove_ours(folder: Path, files: frozenset[str] = ENTRY_FILES) -> None:
    """Delete an entry folder, only if it holds nothing but the files an entry has (EMLC_CACHE_DIR may be a
    folder that also holds the user's own)."""
    if _holds_only(folder, files):
        shutil.rmtree(folder, ignore_errors=True)


def _holds_only(folder: Path, files: frozenset[str]) -> bool:
    try:
        return not folder.is_symlink() and folder.is_dir() and {p.name for p in folder.iterdir()} <= files
    except OSError:
        return False


def staging_folder(base: Path) -> Path:
    """A new folder for an entry (or a run's mmap cache) being written, named after this process so that a
    later run can tell when it was left by a killed one."""
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-{HOST_TAG}-", dir=base))


def commit(staged: Path, key: str, info: dict[str, Any], unreadable: list[tuple[int, str]]) -> Optional[Entry]:
    """Finish a staged entry and rename it into place. If another process committed the same key first, its
    entry is used and ours removed; None when what is there is no intact entry (the run decodes for itself)."""
    base = root()
    assert base is not None
    (staged / UNREADABLE).write_text(json.dumps(unreadable), encoding="utf-8")
    recorded = {**info, "sha256": _sha256(staged / IMAGES), "created": time.time()}
    (staged / INFO).write_text(json.dumps(recorded, indent=1), encoding="utf-8")
    try:
        os.rename(staged, base / key)
        ours = True
    except OSError:  # another process's entry, or a folder there that is not only emlc's: ours is dropped
        shutil.rmtree(staged, ignore_errors=True)
        ours = False
    entry = _read_entry(base / key)
    usable = not entry.problem and not _pixels_problem(entry, tuple(info["shape"]), check_digest=not ours)
    return entry if usable else None


def remove_stale(folder: Path, files: frozenset[str] = ENTRY_FILES) -> list[Path]:
    """Delete the staging folders killed processes left in `folder` (SIGKILL runs no cleanup): only folders named
    exactly as staging_folder names them, created on this host, holding nothing but `files`, whose pid is dead."""
    try:
        listed = sorted(folder.iterdir())
    except OSError:
        return []
    stale = [e for e in listed if _is_stale(e, files)]
    for entry in stale:
        shutil.rmtree(entry, ignore_errors=True)
    if stale:
        log.warning("removed %d cache folder(s) left by killed runs in %s", len(stale), folder)
    return stale


def _is_stale(entry: Path, files: frozenset[str]) -> bool:
    match = STAGING_NAME.fullmatch(entry.name)
    pid = int(match[1]) if match else 0
    if match is None or match[2] != HOST_TAG or pid == os.getpid() or process_alive(pid):
        return False
    return _holds_only(entry, files)
