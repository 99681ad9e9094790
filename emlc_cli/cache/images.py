"""The decoded-image cache: every image decoded once into one uint8 tensor [N, 3, S, S] that all training,
evaluation and prediction batches index.

With the persistent store on (store.py, the default), the pixels come from the store's file: decoded into it
by the first run on this data (under torchrun on one machine, every rank decodes its share straight into the
one file) and read back by later runs and rounds, then placed as `data.cache` says: copied to the GPU
(`device`) or into RAM (`memory`), or used memory-mapped (`mmap`, shared by every process). With the store off,
or a source it cannot key or hold, the cache lives for the run (`data.cache`): `device` (GPU memory),
`memory` (host RAM) or `mmap` (a file beside the run folder, deleted when the run ends, or by the next run when
a killed one could not). `auto` picks device on CUDA when the cache takes under 30 % of the GPU, else memory
when it takes under 25 % of RAM, else mmap. Under torchrun each rank then decodes its share and receives the
others', one shard at a time, so no rank ever holds a second full copy.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from emlc_cli.runtime import distributed
from emlc_cli.cache import embeddings, store
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.errors import OutputError
from emlc_cli.runtime.device import launch_env, release_freed_heap

log = logging.getLogger(__name__)
CACHE_FILE = store.IMAGES
CACHE_NAME, HOST_TAG, remove_stale_caches = store.STAGING_NAME, store.HOST_TAG, store.remove_stale  # one naming rule


@dataclass(frozen=True)
class Resampling:
    """How each image becomes the cache's square (decode_images' resize, crop_pct and interpolation)."""

    resize: str = "stretch"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def recorded(self) -> dict[str, object]:
        """What an entry's info.json adds for a model's own preprocessing (nothing for emlc's default)."""
        return {k: v for k, v in (("crop_pct", self.crop_pct), ("interpolation", self.interpolation))
                if v != getattr(Resampling, k)}


def placement(mode: str, nbytes: int, device: torch.device, copies: int = 1) -> str:
    """Resolve `auto` for a cache of `nbytes` (CPU `device` means host memory) that `copies` processes on this
    machine each hold: read into RAM only while all of the copies fit in a quarter of it."""
    if mode == "device":
        return "device" if device.type == "cuda" else "memory"
    if mode != "auto":
        return mode
    if device.type == "cuda" and nbytes < 0.3 * torch.cuda.get_device_properties(device).total_memory:
        return "device"
    return "memory" if nbytes * max(1, copies) < 0.25 * _ram_bytes() else "mmap"


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


@contextlib.contextmanager
def image_cache(ds: LabeledImages, size: int, workers: int, mode: str, device: torch.device,
                near: Path, resize: str = "stretch", crop_pct: float = 1.0,
                interpolation: str = "bilinear") -> Iterator[tuple[Tensor, list[tuple[int, str]]]]:
    """Decode `ds` once (`resize`, `crop_pct`, `interpolation`: see decode_images); yields (cache, unreadable (index, reason) pairs). A source
    the persistent store holds is memory-mapped from it instead of decoded (store.py); a run-only mmap file is
    removed on exit."""
    if ds.features is not None:
        features, _ = decode_images(ds, size)
        yield features.to(device), []
        return
    shape = (len(ds), 3, size, size)
    where = placement(mode, int(np.prod(shape)), device, _local_processes())
    remove_stale_caches(Path(_existing(near)))
    how = Resampling(resize, crop_pct, interpolation)
    kept = _from_store(ds, size, workers, shape, how)
    if kept is not None:
        yield _placed(kept, where, device), kept.unreadable
        return
    folder = store.staging_folder(Path(_existing(near))) if where == "mmap" else None
    try:
        cache = _run_cache(shape, folder)
        bad = _decode_into(cache, ds, size, workers, how)
        log.info("decoded %d images into a %s cache (%.0f MB)", len(ds), where, cache.numel() / 2**20)
        yield (cache.to(device) if where == "device" else cache), bad
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _from_store(ds: LabeledImages, size: int, workers: int, shape: tuple[int, ...], how: Resampling) -> store.Entry | None:
    """The source's entry in the persistent store, decoding it into the store first if it lacks it; None when
    the store is off, the source cannot be fingerprinted, it would not fit, or the processes span nodes."""
    if store.root() is None or not _one_node() or _inside_data(ds):
        return None
    store.max_bytes()  # a bad EMLC_CACHE_MAX_GB is one line on every process, before rank 0 stages anything
    key = distributed.broadcast_object(store.key_for(ds, size, how.resize, how.crop_pct, how.interpolation)
                                       if distributed.world().is_main else None)
    if key is None:
        return None
    entry = distributed.broadcast_object(_main_lookup(key, shape))
    if entry is None:
        entry = _decode_to_store(ds, size, workers, shape, key, how)
    if entry is None:
        return None
    log.info("reading %d decoded images from %s", len(ds), entry.path)
    return entry


def _placed(entry: store.Entry, where: str, device: torch.device) -> Tensor:
    """The entry's pixels as the placement asks: read into RAM (no mapping held beside the copy), copied to the
    GPU, or mapped copy-on-write (`mmap`: shared by every process, no warning about a read-only array).
    Training from the mapping cost the demo 10-20 % more time (two to three times the system time) than from RAM."""
    if where == "memory":
        return torch.from_numpy(np.load(entry.images))
    mapped = torch.from_numpy(np.load(entry.images, mmap_mode="c"))
    return mapped.to(device) if where == "device" else mapped


def _main_lookup(key: str, shape: tuple[int, ...]) -> store.Entry | None:
    if not distributed.world().is_main:
        return None
    base = store.root()
    if base is not None and base.is_dir():
        remove_stale_caches(base)
    return store.lookup(key, shape)


def _inside_data(ds: LabeledImages) -> bool:
    """EMLC_CACHE_DIR inside an image folder being read: the data is only ever read, so the store is not used."""
    base = store.root()
    if ds.open_image is not None or base is None or not base.resolve().is_relative_to(Path(ds.root).resolve()):
        return False
    log.warning("EMLC_CACHE_DIR %s is inside the data folder, which emlc never writes to; decoding for this run only",
                base.parent)
    return True


def _local_processes() -> int:
    """The processes on this machine (torchrun's LOCAL_WORLD_SIZE), each of which holds its own cache in RAM."""
    world = distributed.world()
    return launch_env().local_world_size if world.distributed else 1


def _one_node() -> bool:
    """Every process on this machine (torchrun sets LOCAL_WORLD_SIZE): they can share one file."""
    world = distributed.world()
    return not world.distributed or _local_processes() == world.size


def _decode_to_store(ds: LabeledImages, size: int, workers: int, shape: tuple[int, ...], key: str,
                     how: Resampling) -> store.Entry | None:
    """Rank 0 stages a file of the full shape; every rank decodes its shard straight into it; rank 0 commits."""
    staged = distributed.broadcast_object(_main_stage(shape))
    if staged is None:
        return None
    mapped = np.load(staged / CACHE_FILE, mmap_mode="r+")
    bad = _decode_my_shard(torch.from_numpy(mapped), ds, size, workers, how)
    mapped.flush()
    del mapped
    unreadable = _all_unreadable(bad)
    distributed.barrier()
    info = {"source": ds.origin.get("location") or str(ds.root), "kind": ds.kind, "rows": len(ds), "size": size,
            "resize": how.resize, "shape": list(shape), **how.recorded()}
    entry = _main_commit(staged, key, info, unreadable)
    log.info("decoded %d images into the image cache %s", len(ds), getattr(entry, "path", ""))
    return distributed.broadcast_object(entry)


def _main_commit(staged: Path, key: str, info: dict, unreadable: list[tuple[int, str]]) -> store.Entry | None:
    """Rank 0 renames the staged entry into place; a disk that fills up now leaves no entry, and the run
    decodes for itself instead (the other ranks wait for this answer, so it must not raise)."""
    if not distributed.world().is_main:
        return None
    try:
        return store.commit(staged, key, info, unreadable)
    except OSError as err:
        log.warning("cannot finish the image cache in %s (%s); decoding for this run only", staged.parent, err)
        shutil.rmtree(staged, ignore_errors=True)
        return None


def _main_stage(shape: tuple[int, ...]) -> Path | None:
    """A staging folder holding a preallocated images.npy of `shape`, after making room; None if it cannot be."""
    if not distributed.world().is_main:
        return None
    base, nbytes, folder = store.root(), int(np.prod(shape)), None
    try:
        if base is None or not embeddings.make_room(nbytes):
            log.info("the decoded images (%.1f GB) exceed EMLC_CACHE_MAX_GB; decoding for this run only", nbytes / 2**30)
            return None
        folder = store.staging_folder(base)
        _allocate(shape, folder)
        return folder
    except OSError as err:  # unwritable or full: the run goes on without the store
        log.warning("cannot write the image cache in %s (%s); decoding for this run only", base, err)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return None


def _existing(path: Path) -> str:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return str(path)


def _run_cache(shape: tuple[int, ...], folder: Path | None) -> Tensor:
    try:
        return _allocate(shape, folder)
    except OSError as err:
        raise OutputError(f"cannot write the image cache in {folder} ({err.strerror or err}); it needs "
                          f"{int(np.prod(shape)) / 2**20:,.1f} MB there, or set the recipe's data.cache=memory") from None


def _allocate(shape: tuple[int, ...], folder: Path | None) -> Tensor:
    if folder is None:
        return torch.zeros(shape, dtype=torch.uint8)
    mapped = np.lib.format.open_memmap(folder / CACHE_FILE, mode="w+", dtype=np.uint8, shape=shape)
    _reserve(folder / CACHE_FILE)
    return torch.from_numpy(mapped)


def _reserve(path: Path) -> None:
    """Claim the file's blocks now: a sparse mmap file on a disk that fills up kills the process with SIGBUS at
    the first page written, where a full disk here is one OSError."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate: sparse as before
                return
            raise


def _decode_into(cache: Tensor, ds: LabeledImages, size: int, workers: int, how: Resampling) -> list[tuple[int, str]]:
    bad = _decode_my_shard(cache, ds, size, workers, how)
    distributed.share_shards_(cache)
    return _all_unreadable(bad)


def _decode_my_shard(cache: Tensor, ds: LabeledImages, size: int, workers: int, how: Resampling) -> list[tuple[int, str]]:
    """This rank's contiguous shard of `ds`, decoded into its rows of `cache`; its unreadable rows."""
    world = distributed.world()
    mine = distributed.shard(len(ds), world.size, world.rank)
    _, bad = decode_images(ds, size, workers, mine, out=cache[mine.start: mine.stop], resize=how.resize,
                           crop_pct=how.crop_pct, interpolation=how.interpolation)
    release_freed_heap()  # the decoder threads' buffers, before training
    return bad


def _all_unreadable(bad: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return sorted(item for part in distributed.gather_objects(bad) for item in part)


