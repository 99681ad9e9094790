"""Decoding: every item of a source read once into uint8 pixels (or its feature vector), as the cache stores it."""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from emlc_cli.data.labeled import LabeledImages


def decode_images(data: LabeledImages, size: int, workers: int = 0, rows: range | None = None,
                  out: torch.Tensor | None = None) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Decode every item of `rows` (default: all) once: uint8 [n, 3, size, size] for images (into `out` when
    given), float32 [n, D] for feature vectors. Unreadable images come back listed as (dataset index, reason)."""
    rows = range(len(data)) if rows is None else rows
    # Over Image.MAX_IMAGE_PIXELS PIL warns once per image (thousands of lines on a large folder); over twice that
    # it raises DecompressionBombError, recorded below as unreadable. Set per call: callers may reset the filters.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if data.features is not None:
        return torch.as_tensor(np.asarray(data.features[rows.start: rows.stop], dtype=np.float32)), []
    out = torch.zeros((len(rows), 3, size, size), dtype=torch.uint8) if out is None else out
    bad: list[tuple[int, str]] = []

    def work(i: int) -> None:
        try:
            out[i - rows.start] = torch.from_numpy(_read_rgb(data.open(i), size)).permute(2, 0, 1)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError,
                EOFError, MemoryError, IndexError, TypeError) as err:  # PIL's many ways to fail on one bad file
            bad.append((i, f"{type(err).__name__}: {err}".splitlines()[0][:200]))

    threads = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, rows, chunksize=256))
    return out, sorted(bad)


def _read_rgb(opened: Image.Image, size: int) -> np.ndarray:
    with opened as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            scale = 1.0 / 256.0 if img.mode.startswith("I;16") or np.asarray(img).max() > 255 else 1.0
            img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) * scale, 0, 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
            img = background
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.array(img, dtype=np.uint8)
