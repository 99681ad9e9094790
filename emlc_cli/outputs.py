"""The run folder: staged in a temporary sibling folder, then moved into place in one rename."""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from emlc_cli.errors import DataError, OutputError

CORRECTED_COLUMNS = ["path", "label", "corrected_label", "confidence", "changed", "split"]
TO_VERIFY_COLUMNS = ["path", "label", "corrected_label", "confidence", "reason", "priority"]


def check_out_dir(out: Path, data_root: Path | None, overwrite: bool) -> None:
    """Refuse an existing run folder (unless overwrite), a folder inside DATA, or an unwritable parent."""
    out = Path(out)
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
    """Write files into a staging folder; `commit()` moves it to `final` atomically."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.", suffix=".partial", dir=self.final.parent))

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)

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
