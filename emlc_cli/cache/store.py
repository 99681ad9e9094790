"""The persistent decoded-image store: a source decoded once at one image size is kept on disk and memory-mapped
by later runs, `--clean decisions.csv` rounds and the other processes of a torchrun launch on the same node.

Location: `EMLC_CACHE_DIR` (default `$XDG_CACHE_HOME/emlc`, else `~/.cache/emlc`), entries under `images/<key>/`
(`images.npy` uint8 [N, 3, S, S], `unreadable.json`, `info.json`); `EMLC_CACHE_DIR=none` turns it off. Size cap:
`EMLC_CACHE_MAX_GB` (default 50): the least recently used entries are removed to make room, and a source
larger than the cap is decoded for the run only. The key is a fingerprint of what the pixels depend on: the
source (an image folder's file listing with sizes and modification times; a dataset's location, split,
revision and `datasets` fingerprint), the image size and resize (`data.resize`), and the decoder (DECODE_VERSION, Pillow's version).
Entries are written into a staging folder and renamed into place when complete; staging folders of killed
processes are removed at start. Torch-free (`emlc cache ls` answers without importing torch)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from emlc_cli.run_folder.locks import process_alive

log = logging.getLogger(__name__)
DECODE_VERSION = "rgb-white-alpha-bilinear-draft-2"  # change whenever decode_images gives other pixels for the same file
IMAGES, UNREADABLE, INFO = "images.npy", "unreadable.json", "info.json"
DEFAULT_MAX_GB = 50.0
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
    raw = os.environ.get("EMLC_CACHE_MAX_GB", "")
    try:
        gigabytes = float(raw) if raw.strip() else DEFAULT_MAX_GB
    except ValueError:
        log.warning("EMLC_CACHE_MAX_GB=%r is not a number; using %s", raw, DEFAULT_MAX_GB)
        gigabytes = DEFAULT_MAX_GB
    return int(max(gigabytes, 0.0) * 2**30)


# ---- keys ---------------------------------------------------------------------------------------------
def key_for(ds: Any, size: int, resize: str = "stretch") -> Optional[str]:
    """The entry key of `ds` (a LabeledImages) decoded at `size` px; None when its pixels cannot be fingerprinted.
    The default "stretch" resize adds nothing to the key, so entries written before `data.resize` stay valid."""
    identity = source_identity(ds)
    if identity is None:
        return None
    from PIL import __version__ as pillow

    parts = {"source": identity, "size": size, "decoder": DECODE_VERSION, "pillow": pillow}
    if resize != "stretch":
        parts["resize"] = resize
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
    """The complete entry for `key` holding an array of `shape`, marked as just used; a damaged one is removed."""
    base = root()
    if base is None or not (base / key / INFO).is_file():
        return None
    entry = _read_entry(base / key)
    if entry is None or entry.info.get("shape") != list(shape) or not _array_intact(entry.images, shape):
        log.warning("image cache %s is damaged or incomplete; decoding again", base / key)
        _remove_ours(base / key)
        return None
    os.utime(entry.path / INFO)
    return entry


def _array_intact(path: Path, shape: tuple[int, ...]) -> bool:
    import numpy as np

    try:
        mapped = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return mapped.dtype == np.uint8 and mapped.shape == tuple(shape)


def _read_entry(path: Path) -> Optional[Entry]:
    try:
        info = json.loads((path / INFO).read_text(encoding="utf-8"))
        unreadable = [(int(i), str(reason)) for i, reason in json.loads((path / UNREADABLE).read_text(encoding="utf-8"))]
        size = (path / IMAGES).stat().st_size
    except (OSError, ValueError, TypeError):
        return None
    return Entry(path.name, path, size, info, unreadable) if isinstance(info, dict) else None


def entries() -> list[Entry]:
    """Every complete entry, most recently used first."""
    base = root()
    if base is None or not base.is_dir():
        return []
    found = [_read_entry(p) for p in base.iterdir() if KEY_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted((e for e in found if e is not None), key=lambda e: -e.last_used)


def remove(entry: Entry) -> None:
    _remove_ours(entry.path)


def _remove_ours(folder: Path) -> None:
    """Delete an entry folder, only if it holds nothing but the files an entry has (EMLC_CACHE_DIR may be a
    folder that also holds the user's own)."""
    if _holds_only_entry_files(folder):
        shutil.rmtree(folder, ignore_errors=True)


def _holds_only_entry_files(folder: Path) -> bool:
    try:
        return not folder.is_symlink() and folder.is_dir() and {p.name for p in folder.iterdir()} <= {IMAGES, UNREADABLE, INFO}
    except OSError:
        return False


def make_room(needed: int) -> bool:
    """Remove least recently used entries until `needed` more bytes fit under the cap; False if they never can."""
    cap = max_bytes()
    if needed > cap:
        return False
    kept = entries()
    total = sum(e.bytes for e in kept)
    while kept and total + needed > cap:
        oldest = kept.pop()
        log.info("removing image cache %s (least recently used) to stay under %.1f GB", oldest.path, cap / 2**30)
        remove(oldest)
        total -= oldest.bytes
    return True


# ---- writing ------------------------------------------------------------------------------------------
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
    (staged / INFO).write_text(json.dumps({**info, "created": time.time()}, indent=1), encoding="utf-8")
    try:
        os.rename(staged, base / key)
    except OSError:  # another process's entry, or a folder there that is not only emlc's: ours is dropped
        shutil.rmtree(staged, ignore_errors=True)
    entry = _read_entry(base / key)
    return entry if entry is not None and _array_intact(entry.images, tuple(info["shape"])) else None


def remove_stale(folder: Path) -> list[Path]:
    """Delete the staging folders killed processes left in `folder` (SIGKILL runs no cleanup): only folders named
    exactly as staging_folder names them, created on this host, holding nothing but entry files, whose pid is dead."""
    try:
        listed = sorted(folder.iterdir())
    except OSError:
        return []
    stale = [e for e in listed if _is_stale(e)]
    for entry in stale:
        shutil.rmtree(entry, ignore_errors=True)
    if stale:
        log.warning("removed %d image cache(s) left by killed runs in %s", len(stale), folder)
    return stale


def _is_stale(entry: Path) -> bool:
    match = STAGING_NAME.fullmatch(entry.name)
    pid = int(match[1]) if match else 0
    if match is None or match[2] != HOST_TAG or pid == os.getpid() or process_alive(pid):
        return False
    return _holds_only_entry_files(entry)
