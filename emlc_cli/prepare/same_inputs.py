"""Every process of a launch reads its own copy of the inputs (nodes need not share a filesystem). Before any work
they compare theirs with rank 0's, and a difference stops every rank with one line naming it: without the check a
node holding another copy of DATA would train on a mix of the two (each rank decodes its share of the images).

Compared: the image list and given labels, the classes, the verified set, the recipe, the seed and, for image
files, each file's size (a stat per file; the pixels themselves are not hashed, which would read every image
on every node)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from emlc_cli.runtime import distributed
from emlc_cli.errors import LaunchError
from emlc_cli.prepare.verified import Prepared

FIX = "give every node the same copy of DATA, the manifests and the command line"


def check_same_on_every_rank(prepared: Prepared, inputs: dict[str, Any]) -> None:
    """Raise the same LaunchError on every rank when any rank's inputs differ from rank 0's."""
    if not distributed.world().distributed:
        return
    sizes = _file_sizes(prepared)
    mine = {**inputs, "recipe": _digest(inputs["recipe"]), "sizes": _digest(sizes)}
    everyone = distributed.gather_objects(mine)
    different = [(rank, key) for rank, theirs in enumerate(everyone) for key in mine if theirs[key] != everyone[0][key]]
    if not different:
        return
    rank, key = different[0]
    if key in ("data", "sizes"):  # every rank sees the same list, so every rank takes part in this second exchange
        listings = distributed.gather_objects((prepared.dataset.paths, prepared.dataset.labels.tolist(), sizes))
        raise LaunchError(f"rank {rank}'s inputs differ from rank 0's: {_first_row(listings[0], listings[rank])}; {FIX}")
    raise LaunchError(f"rank {rank}'s inputs differ from rank 0's: {_NAMES.get(key, key)}; {FIX}")


_NAMES = {"classes": "the classes", "verified": "the verified set (--clean)", "recipe": "the recipe", "seed": "--seed"}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_sizes(prepared: Prepared) -> list[int]:
    """Each image file's size in bytes (-1: missing); empty for sources not read from files."""
    ds = prepared.dataset
    if ds.open_image is not None or ds.features is not None:
        return []
    return [_size(Path(ds.root) / path) for path in ds.paths]


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _first_row(main: tuple[list[str], list[int], list[int]], other: tuple[list[str], list[int], list[int]]) -> str:
    (paths, labels, sizes), (their_paths, their_labels, their_sizes) = main, other
    if len(paths) != len(their_paths):
        return f"DATA holds {len(their_paths)} images there and {len(paths)} on rank 0"
    for row, (path, theirs) in enumerate(zip(paths, their_paths)):
        if path != theirs:
            return f"image {row + 1} is {theirs} there and {path} on rank 0"
        if labels[row] != their_labels[row]:
            return f"{path} has another given label there"
        if sizes and sizes[row] != their_sizes[row]:
            return f"{path} is {their_sizes[row]} bytes there and {sizes[row]} bytes on rank 0"
    return "the image list or labels"
