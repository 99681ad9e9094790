"""The image-folder source: `DATA/<class>/**/<image>` (torchvision ImageFolder), or a flat folder plus a
`path,label` CSV (`--labels`). Rows are named by their path relative to DATA."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.manifest import normalise_relpath, read_path_label_csv
from emlc_cli.data.spec import SourceSpec, origin_record
from emlc_cli.errors import DataError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def is_image_folder(location: str) -> bool:
    """Anything on disk that no other kind claims and that is not a regular file (checked last)."""
    path = Path(location)
    return path.exists() and not path.is_file()


def read_image_folder(spec: SourceSpec, kind: str) -> LabeledImages:
    """The source reader (see data/kinds.py): an image folder has files, not columns."""
    if spec.feature_column:
        raise DataError(f"--feature-column {spec.feature_column}: an image folder has no columns", path=spec.location)
    images = load_image_folder(Path(spec.location), Path(spec.labels_csv) if spec.labels_csv else None)
    images.origin = origin_record(spec, kind, len(images))
    return images


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
        paths += images
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


def _list_images(folder: Path, under: Optional[str] = None) -> tuple[list[str], int]:
    """Image files under `folder` as '/'-separated paths beginning with `under` (default: the folder's name,
    which makes them relative to DATA for DATA/<class>; "" for paths relative to `folder`), and the count of
    other files.
    Hidden entries are skipped and symlinked folders not entered (as os.walk without followlinks); a file's
    type comes from the directory listing, so a million files cost no stat call each."""
    images, others, pending = [], 0, [(str(folder), folder.name if under is None else under)]
    while pending:
        top, rel = pending.pop()
        with os.scandir(top) as listing:
            entries = [e for e in listing if not e.name.startswith(".")]
        for entry in entries:
            if entry.is_dir():
                if not entry.is_symlink():
                    pending.append((entry.path, f"{rel}/{entry.name}" if rel else entry.name))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():  # no FIFO, socket or device
                images.append(f"{rel}/{entry.name}" if rel else entry.name)
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


def load_unlabelled_folder(root: Path) -> LabeledImages:
    """Every image under `root` (any layout), one placeholder class: for prediction, where no label is read."""
    paths, ignored = _list_images(Path(root), under="")
    if not paths:
        raise DataError("no images found", path=root)
    return _sorted_images(Path(root), paths, [0] * len(paths), ["?"], ignored)
