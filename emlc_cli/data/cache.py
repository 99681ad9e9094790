"""The decoded-image cache: every image decoded once into one uint8 tensor [N, 3, S, S] that all training,
evaluation and prediction batches index.

Where it lives (`data.cache`): `device` (GPU memory: batches never cross the bus), `memory` (host RAM) or
`mmap` (a file beside the run folder, paged in by the OS, deleted when the run ends, or by the next run when
a killed one could not: 224 px datasets larger than RAM). `auto` picks device on CUDA when the cache takes
under 30 % of the GPU, else memory when it takes under 25 % of RAM, else mmap. Under torchrun each rank decodes its share and receives the others', one shard
at a time, so no rank ever holds a second full copy.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from emlc_cli import distributed
from emlc_cli.data.decode import decode_images
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.locks import process_alive

log = logging.getLogger(__name__)
CACHE_PREFIX = ".emlc-cache-"
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]  # pids are only meaningful on one host
# .emlc-cache-<pid>-<host tag>-<mkdtemp's 8 characters>: exactly what _cache_folder creates, nothing else
CACHE_NAME = re.compile(r"\.emlc-cache-(\d+)-([0-9a-f]{8})-[a-z0-9_]{8}")
CACHE_FILE = "images.npy"


def placement(mode: str, nbytes: int, device: torch.device) -> str:
    """Resolve `auto` for a cache of `nbytes` (CPU `device` means host memory)."""
    if mode == "device":
        return "device" if device.type == "cuda" else "memory"
    if mode != "auto":
        return mode
    if device.type == "cuda" and nbytes < 0.3 * torch.cuda.get_device_properties(device).total_memory:
        return "device"
    return "memory" if nbytes < 0.25 * _ram_bytes() else "mmap"


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


@contextlib.contextmanager
def image_cache(ds: LabeledImages, size: int, workers: int, mode: str, device: torch.device,
                near: Path) -> Iterator[tuple[Tensor, list[tuple[int, str]]]]:
    """Decode `ds` once; yields (cache, unreadable (index, reason) pairs). An mmap file is removed on exit."""
    if ds.features is not None:
        features, _ = decode_images(ds, size)
        yield features.to(device), []
        return
    shape = (len(ds), 3, size, size)
    where = placement(mode, int(np.prod(shape)), device)
    remove_stale_caches(Path(_existing(near)))
    folder = _cache_folder(near) if where == "mmap" else None
    try:
        cache = _allocate(shape, folder)
        bad = _decode_into(cache, ds, size, workers)
        log.info("decoded %d images into a %s cache (%.0f MB)", len(ds), where, cache.numel() / 2**20)
        yield (cache.to(device) if where == "device" else cache), bad
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _cache_folder(near: Path) -> Path:
    """A new mmap cache folder beside the run, named after this process so a later run can tell it is stale."""
    return Path(tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-{HOST_TAG}-", dir=_existing(near)))


def remove_stale_caches(folder: Path) -> list[Path]:
    """Delete the mmap caches a killed run left in `folder` (SIGKILL runs no cleanup): only folders named exactly
    as _cache_folder names them, created on this host, holding nothing but the cache file, whose pid is dead."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    stale = [e for e in entries if _is_stale(e)]
    for entry in stale:
        shutil.rmtree(entry, ignore_errors=True)
    if stale:
        log.warning("removed %d image cache(s) left by killed runs in %s", len(stale), folder)
    return stale


def _is_stale(entry: Path) -> bool:
    match = CACHE_NAME.fullmatch(entry.name)
    pid = int(match[1]) if match else 0
    if match is None or match[2] != HOST_TAG or pid == os.getpid() or process_alive(pid):
        return False
    try:
        return not entry.is_symlink() and entry.is_dir() and {p.name for p in entry.iterdir()} <= {CACHE_FILE}
    except OSError:
        return False


def _existing(path: Path) -> str:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return str(path)


def _allocate(shape: tuple[int, ...], folder: Path | None) -> Tensor:
    if folder is None:
        return torch.zeros(shape, dtype=torch.uint8)
    mapped = np.lib.format.open_memmap(folder / CACHE_FILE, mode="w+", dtype=np.uint8, shape=shape)
    return torch.from_numpy(mapped)


def _decode_into(cache: Tensor, ds: LabeledImages, size: int, workers: int) -> list[tuple[int, str]]:
    world = distributed.world()
    mine = distributed.shard(len(ds), world.size, world.rank)
    _, bad = decode_images(ds, size, workers, mine, out=cache[mine.start: mine.stop])
    _release_freed_heap()
    distributed.share_shards_(cache)
    return sorted(item for part in distributed.gather_objects(bad) for item in part)


def _release_freed_heap() -> None:
    """Decoder threads leave freed buffers in glibc's per-thread arenas; hand them back before training."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
