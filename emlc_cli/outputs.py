"""The run folder: staged in a temporary sibling folder, then moved into place in one rename."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from emlc_cli.errors import DataError, OutputError

STATE_FILE = "training_state.pt"
CORRECTED_COLUMNS = ["path", "label", "corrected_label", "confidence", "changed", "split"]
TO_VERIFY_COLUMNS = ["path", "label", "corrected_label", "confidence", "reason", "priority"]


def staging_path(out: Path) -> Path:
    """Where a run is built (and its resumable state kept) until it is complete."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def check_out_dir(out: Path, data_root: Path | None, overwrite: bool, resume: bool = False) -> None:
    """Refuse an existing run folder (unless overwrite), a folder inside DATA, or an unwritable parent."""
    out = Path(out)
    staged = staging_path(out)
    if resume and not (staged / STATE_FILE).is_file():
        raise OutputError(f"--resume: no interrupted run to continue for --out {out} (expected {staged / STATE_FILE})")
    if not resume and not overwrite and staged.exists():
        raise OutputError(f"--out {out}: an interrupted run exists ({staged}); pass --resume to continue it or --overwrite to start over")
    if data_root is not None:
        try:
            out.resolve().relative_to(Path(data_root).resolve())
            raise OutputError(f"--out {out} lies inside the data folder {data_root}; emlc never writes into your data")
        except ValueError:
            pass
    if out.exists() and not overwrite:
        raise OutputError(f"--out {out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OutputError(f"--out {out}: {parent} is not writable")


class RunDir:
    """Write files into the staging folder; `commit()` renames it to `final` in one step.

    The staging folder also holds the resumable training state. On an error it is removed, unless a
    training state was saved in it (then --resume can continue from the last good checkpoint).
    """

    def __init__(self, final: Path, resume: bool = False) -> None:
        self.final = Path(final)
        self.path = staging_path(self.final)
        if not resume and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and not (self.path / STATE_FILE).exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def save_state(self, state: dict[str, Any]) -> None:
        """Atomic: a crash mid-write leaves the previous state in place."""
        target = self.path / STATE_FILE
        partial = target.with_suffix(".tmp")
        torch.save(state, partial)
        os.replace(partial, target)

    def load_state(self) -> dict[str, Any]:
        return load_training_state(self.path / STATE_FILE)

    def write_json(self, name: str, data: Any) -> Path:
        target = self.path / name
        target.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        target.write_text(text, encoding="utf-8")
        return target

    def write_csv(self, name: str, columns: list[str], rows: list[list[Any]]) -> Path:
        target = self.path / name
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)
        return target

    def write_model(self, stem: str, module: torch.nn.Module, config: dict[str, Any]) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(self.path / f"{stem}.safetensors"))
        self.write_json(f"{stem}.json", config)

    def commit(self) -> Path:
        (self.path / STATE_FILE).unlink(missing_ok=True)
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def load_model_files(run: Path, stem: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read `stem.safetensors` + `stem.json` from a run folder."""
    weights, config = Path(run) / f"{stem}.safetensors", Path(run) / f"{stem}.json"
    for f in (weights, config):
        if not f.is_file():
            raise DataError("not found; is this an emlc run folder?", path=f)
    try:
        return load_file(str(weights)), json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read checkpoint: {err}", path=weights) from None


def load_training_state(path: Path) -> dict[str, Any]:
    """Tensors and plain containers only (weights_only=True); anything pickled is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OutputError(f"{path}: training state not found") from None
    except Exception as err:  # torch raises UnpicklingError / RuntimeError for non-tensor payloads
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OutputError(f"{path}: refused, not a tensors-only checkpoint ({first[:160]})") from None


def read_corrected(run: Path) -> list[dict[str, str]]:
    path = Path(run) / "corrected.csv"
    if not path.is_file():
        raise DataError("not found; is this an emlc run folder?", path=path)
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class NoOutputs:
    """What ranks other than 0 write in a distributed run: nothing (rank 0's RunDir holds the run)."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.path = staging_path(self.final)

    def __enter__(self) -> "NoOutputs":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def save_state(self, state: dict[str, Any]) -> None:
        return None

    def write_json(self, name: str, data: Any) -> None:
        return None

    def write_text(self, name: str, text: str) -> None:
        return None

    def write_csv(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        return None

    def write_model(self, stem: str, module: torch.nn.Module, config: dict[str, Any]) -> None:
        return None

    def commit(self) -> Path:
        return self.final
