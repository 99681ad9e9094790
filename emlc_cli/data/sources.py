"""Data sources, all loaded into one internal form: LabeledImages."""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from emlc_cli.data.manifest import normalise_relpath, read_path_label_csv
from emlc_cli.errors import DataError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class LabeledImages:
    """The one internal form of every source: ids (sorted), given labels, class names, and a way to read item i.

    For an image folder, ids are paths relative to `root` and `open_image` is None (files are read from disk).
    Other sources set `open_image(i) -> PIL.Image` (e.g. Arrow-backed Hugging Face datasets), or `features`
    (an N x D float array) for feature-vector datasets, which skip images altogether.
    `origin` records what reopens the source read-only (see emlc_cli.data.hf.SourceSpec); it never holds a token.
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

    def __len__(self) -> int:
        return len(self.paths)

    def index_of(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def open(self, i: int) -> Image.Image:
        if self.open_image is not None:
            return self.open_image(i)
        path = self.root / self.paths[i]
        if not path.is_file():  # a FIFO named img.jpg would block the decoder forever
            raise OSError("not a regular file")
        return Image.open(path)


def load_image_folder(root: Path, labels_csv: Path | None = None) -> LabeledImages:
    """`root/<class>/**/<image>` (torchvision ImageFolder), or a flat folder plus `path,label` CSV."""
    root = Path(root)
    if not root.exists():
        raise DataError("data folder not found", path=root)
    if not root.is_dir():
        raise DataError("data must be a folder of images", path=root)
    if labels_csv is not None:
        return _from_labels_csv(root, Path(labels_csv))
    return _from_class_folders(root)


def _from_class_folders(root: Path) -> LabeledImages:
    class_dirs = _class_folders(root)
    if not class_dirs:
        raise DataError("no class folders found (expected DATA/<class>/<image>, or pass --labels labels.csv)", path=root)
    if len(class_dirs) < 2:
        raise DataError(f"only one class folder ('{class_dirs[0].name}'); at least two classes are needed", path=root)
    paths, labels, ignored = [], [], 0
    for label, class_dir in enumerate(class_dirs):
        images, others = _list_images(class_dir)
        if not images:
            raise DataError("class folder holds no images", path=class_dir)
        ignored += others
        paths += [p.relative_to(root).as_posix() for p in images]
        labels += [label] * len(images)
    return _sorted_images(root, paths, labels, [d.name for d in class_dirs], ignored)


def _class_folders(root: Path) -> list[Path]:
    """Sub-folders of DATA, except hidden ones and symlinks that resolve inside DATA or above it (a link back to
    DATA would become a class holding every image, or a loop); those are skipped with one warning."""
    top = root.resolve()
    folders, looped = [], []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        target = d.resolve()
        if d.is_symlink() and (target.is_relative_to(top) or top.is_relative_to(target)):
            looped.append(d.name)
            continue
        folders.append(d)
    if looped:
        log.warning("skipped %d symlinked class folder(s) that point inside the data folder or above it: %s",
                    len(looped), ", ".join(looped))
    return folders


def _from_labels_csv(root: Path, labels_csv: Path) -> LabeledImages:
    rows = [(path, label.strip(), row) for path, label, row in read_path_label_csv(labels_csv)]
    classes = sorted({label for _, label, _ in rows})
    if len(classes) < 2:
        raise DataError("at least two distinct labels are needed", path=labels_csv)
    lookup = {name: i for i, name in enumerate(classes)}
    seen: dict[str, str] = {}
    for path, label, row in rows:
        check_inside(root, path, labels_csv, row)
        if seen.setdefault(path, label) != label:
            raise DataError(f"'{path}' is listed twice with different labels", path=labels_csv, row=row)
    return _sorted_images(root, list(seen), [lookup[l] for l in seen.values()], classes, 0)


def _sorted_images(root: Path, paths: list[str], labels: list[int], classes: list[str], ignored: int) -> LabeledImages:
    order = sorted(range(len(paths)), key=paths.__getitem__)
    if ignored:
        log.info("ignored %d non-image files under %s", ignored, root)
    return LabeledImages(root, [paths[i] for i in order], np.asarray(labels, dtype=np.int64)[order], classes, ignored)


def _list_images(folder: Path) -> tuple[list[Path], int]:
    images, others = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and full.is_file():  # no FIFO, socket or device
                images.append(full)
            else:
                others += 1
    return images, others


def check_inside(root: Path, relpath: str, source: Path, row: int) -> Path:
    """Resolve a manifest path against DATA; refuse anything that leads outside it, or that is not a regular
    file (a FIFO named img.jpg would block the decoder forever)."""
    if not relpath:
        raise DataError("empty path", path=source, row=row)
    full = root / normalise_relpath(relpath, source, row)
    try:
        full.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        raise DataError(f"path '{relpath}' leads outside the data folder", path=source, row=row) from None
    if not full.is_file():
        what = "is not a regular file" if full.exists() else f"not found in {root}"
        raise DataError(f"image '{relpath}' {what}", path=source, row=row)
    return full


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
