"""`emlc review`: read a run folder, pick what a person should look at, and write a self-contained HTML
report (review_html) or a PNG contact sheet (review_sheet). The original images are only read."""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from emlc_cli.errors import DataError, OutputError
from emlc_cli.outputs import check_file_target

log = logging.getLogger(__name__)

REPORT_TOP = 200   # images per report section unless --top says otherwise
SHEET_TOP = 36     # tiles on a contact sheet unless --top says otherwise
THUMB_PX = 112     # longest side of an inlined thumbnail
Opener = Callable[[str], Image.Image]


@dataclass
class Item:
    """One image as shown: given and corrected label, the decision's confidence, why it is shown."""

    path: str
    given: str
    corrected: str
    confidence: float
    reason: str = ""
    priority: Optional[float] = None

    @property
    def changed(self) -> bool:
        return self.given != self.corrected


@dataclass
class RunView:
    """What the report shows of a run folder; sections are already sorted and capped at `top`."""

    run: Path
    summary: dict[str, Any]
    source: dict[str, Any]
    recipe_text: str
    classes: list[str]
    changed: list[Item]
    uncertain: list[Item]
    to_verify: list[Item]
    totals: dict[str, int]
    noisy_per_class: dict[str, int]
    fingerprint: str
    top: int

    @property
    def name(self) -> str:
        return self.run.resolve().name

    def sections(self) -> list[tuple[str, list[Item]]]:
        return [("changed", self.changed), ("to_verify", self.to_verify), ("uncertain", self.uncertain)]


@dataclass
class ReportResult:
    path: Path
    thumbnails: int
    missing_images: int
    bytes: int
    shown: dict[str, int] = field(default_factory=dict)


@dataclass
class SheetResult:
    path: Path
    tiles: int
    size: tuple[int, int]
    missing_images: int


def load_run(run: Path, top: int = REPORT_TOP) -> RunView:
    """Read summary.json, corrected.csv, to_verify.csv, source.json and recipe.yaml of a run folder."""
    run = Path(run)
    if not run.is_dir():
        raise DataError("run folder not found", path=run)
    if top < 1:
        raise DataError(f"--top must be at least 1, got {top}", path=run)
    summary = _checked(_read_json(run / "summary.json", required=True), SUMMARY_TYPES, run / "summary.json")
    rows = _read_rows(run / "corrected.csv")
    source = _checked(_read_json(run / "source.json", required=False), SOURCE_TYPES, run / "source.json")
    classes = list(summary.get("classes") or source.get("classes") or sorted({r["label"] for r in rows}))
    noisy = [_item(r, run / "corrected.csv", n) for n, r in enumerate(rows, start=2) if r.get("split", "noisy") == "noisy"]
    changed = sorted((i for i in noisy if i.changed), key=lambda i: (-i.confidence, i.path))
    uncertain = sorted((i for i in noisy if not i.changed), key=lambda i: (i.confidence, i.path))
    suggestions = _read_to_verify(run / "to_verify.csv")
    given_counts = Counter(i.given for i in noisy)
    recipe = run / "recipe.yaml"
    return RunView(
        run=run, summary=summary, source=source, classes=classes,
        recipe_text=recipe.read_text(encoding="utf-8") if recipe.is_file() else "",
        changed=changed[:top], uncertain=uncertain[:top], to_verify=suggestions[:top],
        totals={"changed": len(changed), "uncertain": len(uncertain), "to_verify": len(suggestions), "rows": len(rows)},
        noisy_per_class={c: given_counts.get(c, 0) for c in classes},
        fingerprint=_fingerprint(run / "corrected.csv"), top=top,
    )


_NUMBER = (int, float)
SUMMARY_TYPES: dict[str, Any] = {
    "images": int, "noisy": int, "verified": int, "changed": int, "estimated_noise_rate": (*_NUMBER, type(None)),
    "train_seconds": _NUMBER, "images_per_s": _NUMBER, "wall_seconds": _NUMBER, "best_holdout_score": (*_NUMBER, type(None)),
    "recipe": str, "rule": str, "device": str, "classes": list, "change_matrix": list, "changed_per_class": dict,
    "epochs": list, "warnings": list, "skipped": (dict, list),
}
SOURCE_TYPES: dict[str, Any] = {"kind": str, "root": str, "classes": list}
EPOCH_TYPES: dict[str, Any] = {"epoch": int, "phase": str, "student_holdout_acc": _NUMBER, "teacher_holdout_acc": _NUMBER,
                               "seconds": _NUMBER}


def _checked(data: dict[str, Any], types: dict[str, Any], path: Path) -> dict[str, Any]:
    """Refuse a key of the wrong type (a tampered or foreign file) before anything is rendered from it."""
    for key, kind in types.items():
        value = data.get(key)
        if key in data and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            raise DataError(f"key '{key}' has the wrong type ({type(value).__name__})", path=path)
    _check_items(data, path)
    return data


def _check_items(data: dict[str, Any], path: Path) -> None:
    """The containers' contents: class names, a square matrix of counts, per-class counts, epoch records."""
    def fail(key: str, what: str) -> None:
        raise DataError(f"key '{key}' must be {what}", path=path)

    if not all(isinstance(c, str) for c in data.get("classes", [])):
        fail("classes", "a list of class names")
    matrix = data.get("change_matrix", [])
    if not all(isinstance(r, list) and len(r) == len(matrix) and all(_count(v) for v in r) for r in matrix):
        fail("change_matrix", "a square list of lists of counts")
    if not all(_count(v) for v in data.get("changed_per_class", {}).values()):
        fail("changed_per_class", "a mapping of class to count")
    if not all(isinstance(w, str) for w in data.get("warnings", [])):
        fail("warnings", "a list of strings")
    for epoch in data.get("epochs", []):
        if not isinstance(epoch, dict) or any(k in epoch and (not isinstance(epoch[k], t) or isinstance(epoch[k], bool))
                                              for k, t in EPOCH_TYPES.items()):
            fail("epochs", "a list of epoch records (epoch, phase, holdout accuracies, seconds)")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_rows(path: Path) -> list[dict[str, str]]:
    """corrected.csv as dicts (read here rather than via outputs, which would import torch)."""
    if not path.is_file():
        raise DataError("not found; is this an emlc run folder?", path=path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read: {err}", path=path) from None


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise DataError("not found; is this an emlc run folder?", path=path)
        log.info("%s not found; images will show as placeholders", path)
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read JSON: {err}", path=path) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", path=path)
    return data


def _item(row: dict[str, str], source: Path, number: int) -> Item:
    try:
        return Item(row["path"], row["label"], row["corrected_label"], float(row["confidence"]),
                    row.get("reason") or "", float(row["priority"]) if row.get("priority") else None)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"malformed row ({type(err).__name__}: {err})", path=source, row=number) from None


def _read_to_verify(path: Path) -> list[Item]:
    """to_verify.csv in file order (best first); a run without one shows an empty section."""
    if not path.is_file():
        log.info("%s not found; the 'verify next' section stays empty", path)
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [_item(r, path, n) for n, r in enumerate(csv.DictReader(handle), start=2)]


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def image_opener(run: Path, source: dict[str, Any]) -> Optional[Opener]:
    """path -> PIL image for the run's data source, or None when the images cannot be reached.

    Image folders are read here (without importing torch); other kinds go through an
    `open_run_images(run)` helper in emlc_cli.data when one exists, else show placeholders."""
    kind = source.get("kind", "imagefolder")
    if kind == "imagefolder" and source.get("root"):
        root = Path(source["root"])
        if not root.is_dir():
            log.warning("data folder %s not found; thumbnails will be placeholders", root)
            return None
        return lambda path: _open_inside(root, path)
    helper = _find_helper("open_run_images")
    if helper is None:
        log.info("source kind %r has no image reader; thumbnails will be placeholders", kind)
        return None
    try:
        opened = helper(Path(run))
    except Exception as err:  # noqa: BLE001 - a source that cannot be opened still gets a report, with placeholders
        log.warning("cannot open the images of %s (%s); thumbnails will be placeholders", run, err)
        return None
    if opened is None:
        return None
    return opened if callable(opened) else opened.__getitem__


def _find_helper(name: str) -> Optional[Callable[..., Any]]:
    """`name` from emlc_cli.data or any of its modules, if another part of emlc provides it."""
    import pkgutil

    package = importlib.import_module("emlc_cli.data")
    modules = ["emlc_cli.data", *(f"emlc_cli.data.{m.name}" for m in pkgutil.iter_modules(package.__path__))]
    for module in modules:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except Exception as err:  # noqa: BLE001 - an optional source whose dependencies are missing
            log.debug("cannot import %s: %s", module, err)
            continue
        if callable(found):
            return found
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


def write_report(run: Path, out: Optional[Path] = None, top: int = REPORT_TOP) -> ReportResult:
    """Write the self-contained HTML report of `run` to `out` (default RUN/review.html)."""
    from emlc_cli.review_html import render_report

    view = load_run(run, top)
    target = Path(out) if out is not None else Path(run) / "review.html"
    check_file_target(target, Path(run), "--out", _our_report)
    thumbs = Thumbnails(image_opener(view.run, view.source))
    html = render_report(view, thumbs)
    _write_atomic(target, html.encode("utf-8"))
    if thumbs.missing:
        log.warning("%d images could not be read and show as grey placeholders", len(thumbs.missing))
    shown = {name: len(items) for name, items in view.sections()}
    return ReportResult(target, sum(shown.values()), len(thumbs.missing), len(html.encode("utf-8")), shown)


def write_sheet(run: Path, png: Path, top: int = SHEET_TOP) -> SheetResult:
    """Write a PNG contact sheet of the `top` most confident changes of `run`."""
    from emlc_cli.review_sheet import render_sheet

    view = load_run(run, top)
    check_file_target(Path(png), Path(run), "--png", _our_sheet)
    if not view.changed:
        raise DataError("no label was changed in this run; there is nothing to put on a contact sheet",
                        path=Path(run) / "corrected.csv")
    thumbs = Thumbnails(image_opener(view.run, view.source))
    sheet = render_sheet(view, thumbs)
    buffer = io.BytesIO()
    info = PngInfo()
    info.add_text("Software", SHEET_SOFTWARE)
    sheet.save(buffer, format="PNG", optimize=True, pnginfo=info)
    _write_atomic(Path(png), buffer.getvalue())
    return SheetResult(Path(png), len(view.changed), sheet.size, len(thumbs.missing))


SHEET_SOFTWARE = "emlc review"


def _our_report(path: Path) -> bool:
    """An HTML report emlc review wrote (it carries <meta name="emlc-run">)."""
    try:
        with path.open("rb") as handle:
            return b'<meta name="emlc-run"' in handle.read(4096)
    except OSError:
        return False


def _our_sheet(path: Path) -> bool:
    """A contact sheet emlc review wrote (PNG text chunk Software = emlc review)."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == SHEET_SOFTWARE
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError):
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(target: Path, data: bytes) -> None:
    if target.is_dir():
        raise OutputError(f"{target} is a folder; pass a file name")
    tmp: Optional[str] = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"{target}: cannot write ({err.strerror or err})") from None
