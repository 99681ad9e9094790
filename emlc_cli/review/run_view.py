"""What `emlc review` shows of a run folder: the run read (through run_folder), checked, and sorted into the
report's sections."""
from __future__ import annotations

import hashlib
import logging
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.data.spec import relocated
from emlc_cli.errors import DataError

log = logging.getLogger(__name__)
REPORT_TOP = 200   # images per report section unless --top says otherwise


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

    @property
    def manifest_key(self) -> str:
        """The key column `emlc clean --clean` expects for this run's rows: `path` or `id`."""
        return run_folder.manifest_key(run_folder.source_kind(self.source))

    def sections(self) -> list[tuple[str, list[Item]]]:
        return [("changed", self.changed), ("to_verify", self.to_verify), ("uncertain", self.uncertain)]

    def next_command(self, decisions: str = "decisions.csv") -> str:
        """The run's own command (source.json), quoted, with `--clean decisions.csv` added and `--out RUN-next`."""
        return next_round_command(self.source, self.run, decisions)


DROPPED_FLAGS = ("--overwrite", "--resume", "--dry-run")
OUT_OPTIONS = ("--out", "-o")


def next_round_command(source: dict[str, Any], run: Path, decisions: str = "decisions.csv") -> str:
    """`emlc clean DATA --clean CSV ... --clean decisions.csv --out RUN-next`, from the recorded command when there is
    one (its recipe and overrides kept), else from the data location."""
    try:
        words = shlex.split(str(source.get("command") or ""))
    except ValueError:
        words = []
    if words[:2] != ["emlc", "clean"]:
        data = source.get("location") or source.get("root") or "DATA"
        words = ["emlc", "clean", str(data), "--clean", "clean.csv"]
    elif source.get("location"):  # the data where it is now (--data), not where the run read it
        words[2] = str(source["location"])
    kept: list[str] = []
    skip = False
    for word in words:
        if skip or word in DROPPED_FLAGS or word in OUT_OPTIONS:
            skip = word in OUT_OPTIONS
            continue
        kept.append(word)
    cleans = [i for i, word in enumerate(kept) if word in ("--clean", "-c")]
    at = cleans[-1] + 2 if cleans else len(kept)
    kept[at:at] = ["--clean", decisions]
    return shlex.join([*kept, "--out", f"{Path(run).resolve()}-next"])


def load_run(run: Path, top: int = REPORT_TOP, data: Optional[str] = None) -> RunView:
    """Read summary.json, corrected.csv, to_verify.csv, source.json and recipe.yaml of a run folder; `data`: where
    the run's data is now, if it moved."""
    run = Path(run)
    if not run.is_dir():
        raise DataError("run folder not found", path=run)
    if top < 1:
        raise DataError(f"--top must be at least 1, got {top}", path=run)
    summary = _checked(run_folder.read_json(run / run_folder.SUMMARY), SUMMARY_TYPES, run / run_folder.SUMMARY)
    rows = run_folder.read_corrected(run)
    source = relocated(_read_source(run), data)
    classes = list(summary.get("classes") or source.get("classes") or sorted({r["label"] for r in rows}))
    corrected = run / run_folder.CORRECTED
    noisy = [_item(r, corrected, n) for n, r in enumerate(rows, start=2) if r.get("split", "noisy") == "noisy"]
    changed = sorted((i for i in noisy if i.changed), key=lambda i: (-i.confidence, i.path))
    uncertain = sorted((i for i in noisy if not i.changed), key=lambda i: (i.confidence, i.path))
    suggestions = _read_to_verify(run)
    given_counts = Counter(i.given for i in noisy)
    return RunView(
        run=run, summary=summary, source=source, classes=classes, recipe_text=run_folder.read_recipe_text(run),
        changed=changed[:top], uncertain=uncertain[:top], to_verify=suggestions[:top],
        totals={"changed": len(changed), "uncertain": len(uncertain), "to_verify": len(suggestions), "rows": len(rows)},
        noisy_per_class={c: given_counts.get(c, 0) for c in classes},
        fingerprint=_fingerprint(corrected), top=top,
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


def _read_source(run: Path) -> dict[str, Any]:
    path = run / run_folder.SOURCE
    if not path.is_file():
        log.info("%s not found; images will show as placeholders", path)
    return _checked(run_folder.read_json(path, required=False), SOURCE_TYPES, path)


def _read_to_verify(run: Path) -> list[Item]:
    """to_verify.csv in file order (best first); a run without one shows an empty section."""
    path = run / run_folder.TO_VERIFY
    if not path.is_file():
        log.info("%s not found; the 'verify next' section stays empty", path)
    return [_item(r, path, n) for n, r in enumerate(run_folder.read_to_verify(run), start=2)]


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


def _item(row: dict[str, str], source: Path, number: int) -> Item:
    try:
        return Item(row["path"], row["label"], row["corrected_label"], float(row["confidence"]),
                    row.get("reason") or "", float(row["priority"]) if row.get("priority") else None)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"malformed row ({type(err).__name__}: {err})", path=source, row=number) from None


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
