"""LabeledImages: the one internal form every source reader returns."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image


@dataclass
class LabeledImages:
    """The one internal form of every source: ids (sorted), given labels, class names, and a way to read item i.

    For an image folder, ids are paths relative to `root` and `open_image` is None (files are read from disk).
    Other sources set `open_image(i) -> PIL.Image` (e.g. Arrow-backed Hugging Face datasets), or `features`
    (an N x D float array) for feature-vector datasets, which skip images altogether.
    `origin` records what reopens the source read-only (see emlc_cli.data.spec.SourceSpec); it never holds a token.
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    ignored_files: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    open_image: Optional[Callable[[int], Image.Image]] = None
    features: Optional[np.ndarray] = None
    kind: str = "imagefolder"
    origin: dict[str, Any] = field(default_factory=dict)
    fingerprint: Optional[str] = None  # a `datasets` table's own fingerprint: what the image store keys it by
    read_blobs: Optional[Callable[[range], list[Optional[bytes]]]] = None  # encoded files of rows, read in one slice

    def __len__(self) -> int:
        return len(self.paths)

    def index_of(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def blobs(self, rows: range) -> list[Optional[bytes]]:
        """Each row's encoded image file as bytes, or None where only `open` reads it (it then gives the reason)."""
        if self.read_blobs is not None:
            return self.read_blobs(rows)
        if self.open_image is not None:
            return [None] * len(rows)
        return [_file_bytes(self.root / self.paths[i]) for i in rows]

    def open(self, i: int) -> Image.Image:
        if self.open_image is not None:
            return self.open_image(i)
        path = self.root / self.paths[i]
        if not path.is_file():  # a FIFO named img.jpg would block the decoder forever
            raise OSError("not a regular file")
        return Image.open(path)


MAX_BLOB = 64 << 20  # a larger file goes through Image.open, which reads the header before any pixels


def _file_bytes(path: Path) -> Optional[bytes]:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BLOB:  # a FIFO would block forever
            return None
        return path.read_bytes()
    except OSError:
        return None
