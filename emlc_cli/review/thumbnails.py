"""The run's images, reopened read-only and shrunk into thumbnails; anything unreadable becomes a grey square."""
from __future__ import annotations

import base64
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.data.kinds import MOVED, open_run_images

log = logging.getLogger(__name__)
THUMB_PX = 112     # longest side of an inlined thumbnail
Opener = Callable[[str], Image.Image]


def image_opener(run: Path, source: dict[str, Any]) -> Optional[Opener]:
    """path -> PIL image for the run's data source, or None when the images cannot be reached.

    Image folders are read here (without listing the folder again); other kinds are reopened through the
    source's reader (data/kinds.py), and a source that cannot be opened shows placeholders."""
    if run_folder.is_folder_kind(run_folder.source_kind(source)) and source.get("root"):
        root = Path(source["root"])
        if not root.is_dir():
            log.warning("data folder %s not found; thumbnails will be grey squares (%s)", root, MOVED)
            return None
        return lambda path: _open_inside(root, path)
    try:
        return open_run_images(Path(run), source)
    except Exception as err:  # noqa: BLE001 - a source that cannot be opened still gets a report, with placeholders
        log.warning("cannot open the images of %s (%s); thumbnails will be grey squares (%s)", run, err, MOVED)
        return None


def _open_inside(root: Path, relpath: str) -> Image.Image:
    full = (root / relpath).resolve()
    full.relative_to(root.resolve())  # ValueError for a path leading outside the data folder
    if not full.is_file():  # a FIFO would block the report forever
        raise OSError("not a regular file")
    return Image.open(full)


class Thumbnails:
    """Open, shrink and encode images once each; anything unreadable becomes a grey placeholder."""

    def __init__(self, opener: Optional[Opener], size: int = THUMB_PX) -> None:
        self.opener, self.size = opener, size
        self.missing: set[str] = set()
        self._cache: dict[str, str] = {}

    def image(self, path: str, size: Optional[int] = None) -> Optional[Image.Image]:
        """An RGB copy no larger than `size` (None when it cannot be read)."""
        if self.opener is None:
            self.missing.add(path)
            return None
        side = size or self.size
        try:
            with warnings.catch_warnings(), self.opener(path) as img:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.draft("RGB", (side, side))
                rgb = _to_rgb(img)
            rgb.thumbnail((side, side), Image.BICUBIC)
            return rgb
        except (OSError, ValueError, UnidentifiedImageError, SyntaxError, KeyError, IndexError, TypeError,
                AttributeError, Image.DecompressionBombError) as err:  # whatever a source's reader raises for one bad item
            log.info("cannot read %s: %s", path, err)
            self.missing.add(path)
            return None

    def data_uri(self, path: str) -> str:
        if path not in self._cache:
            img = self.image(path)
            self._cache[path] = encode_data_uri(img) if img is not None else placeholder_uri()
        return self._cache[path]


def _to_rgb(img: Image.Image) -> Image.Image:
    img.load()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[-1])
        return background
    if img.mode.startswith(("I", "F")):
        pixels = np.asarray(img, dtype=np.float32)
        scale = 255.0 / max(float(pixels.max()), 1.0) if pixels.max() > 255 else 1.0
        return Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def encode_data_uri(img: Image.Image) -> str:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=80, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_PLACEHOLDER: list[str] = []


def placeholder_uri() -> str:
    if not _PLACEHOLDER:
        buffer = io.BytesIO()
        Image.new("RGB", (THUMB_PX, THUMB_PX), (200, 200, 200)).save(buffer, format="PNG", optimize=True)
        _PLACEHOLDER.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return _PLACEHOLDER[0]
