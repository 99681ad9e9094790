"""Writing the run folder (its format, names and readers are run_folder.py): staged in a temporary sibling
folder, then moved into place in one rename.

Also the one place the output rules live: what an --out / DEST may be (never the data, never a folder that
holds what the command reads, never a folder emlc did not write), the staging lock, and disk-full handling."""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

from emlc_cli.run_folder.disk import writing
from emlc_cli.errors import DataError, OutputError
from emlc_cli.run_folder.locks import acquire_lock, check_own_path, lock_holder, release_lock
from emlc_cli.jsonfile import read_json_file
from emlc_cli.preprocessing import check_model_config as check_preprocessing
from emlc_cli.run_folder.layout import LEGACY_RUN, MARKERS, NOT_A_RUN, SOURCE, STATE_FILE, config_file, lock_path, read_json, staging_path, weights_file
from emlc_cli.run_folder.log import LOG_FILE

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
Protected = Iterable[Union[Path, tuple[Path, str], None]]


def check_out_dir(out: Path, data_root: Any, overwrite: bool, resume: bool = False, *, protect: Protected = (),
                  option: str = "--out") -> None:
    """Refuse, with one line naming why: a bad name, a path under a file, a path that is, holds or lies inside
    DATA (or anything in `protect`), a folder another run is writing, an existing folder without --overwrite,
    and, even with --overwrite, one emlc did not write."""
    out = Path(out)
    target = check_out_path(out, option)
    check_not_inputs(target, [(data_root, "the data folder"), *protect], f"{option} {out}")
    staged = staging_path(out)
    check_own_path(staged, "folder", "staging folder", option)
    holder = lock_holder(lock_path(out), option)
    if holder is not None:
        raise OutputError(f"{option} {out}: another emlc run (pid {holder}) is writing it ({lock_path(out)}); "
                          f"wait for it to finish or choose another {option}")
    if resume:
        check_own_path(staged / STATE_FILE, "file", "training state", option)
    if resume and not (staged / STATE_FILE).is_file():
        raise OutputError(f"--resume: no interrupted run to continue for {option} {out} (expected {staged / STATE_FILE})")
    if not resume and staged.exists():
        if not overwrite:
            raise OutputError(f"{option} {out}: an interrupted run exists ({staged}); pass --resume to continue it "
                              "or --overwrite to start over")
        if not _is_staging(staged):
            raise OutputError(f"{option} {out}: {staged} exists and was not made by emlc; remove it yourself")
    _check_existing(out, overwrite, option)
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{option} {out}: {parent} is not writable")


def check_out_path(out: Path, option: str = "--out") -> Path:
    """The resolved path, after refusing an empty name ('.', '..') and a path under a regular file."""
    if Path(out).name in ("", ".", "..") or str(out).strip() == "":
        raise OutputError(f"{option} '{out}': name a new folder or file (e.g. runs/NAME), not '.' or '..'")
    target = Path(out).resolve()
    for parent in target.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"{option} {out}: {parent} is a file, not a folder")
            break
    return target


def check_not_inputs(target: Path, protect: Protected, what: str) -> None:
    """Refuse a target that is, contains or lies inside any protected path (its staging folder included)."""
    target = Path(target).resolve()
    staged = staging_path(target)
    for item in protect:
        path, name = item if isinstance(item, tuple) else (item, "an input")
        if path is None or str(path).startswith("hf:"):
            continue
        guarded = Path(path).resolve()
        if not guarded.exists():
            continue
        if target == guarded:
            relation = "is"
        elif guarded.is_relative_to(target) or guarded.is_relative_to(staged):
            relation = "contains"
        elif target.is_relative_to(guarded):
            relation = "lies inside"
        else:
            continue
        raise OutputError(f"{what} {relation} {name} {path}; emlc never writes into, or replaces, what it reads")


def _check_existing(out: Path, overwrite: bool, option: str) -> None:
    if out.is_symlink():
        raise OutputError(f"{option} {out} is a symbolic link; emlc never writes through or replaces a link: remove "
                          f"it yourself or choose another {option}")
    if not out.exists():
        return
    if not overwrite:
        raise OutputError(f"{option} {out} already exists; pass --overwrite to replace it")
    if not out.is_dir():
        raise OutputError(f"{option} {out} exists and is not a folder")
    if not is_emlc_folder(out):
        raise OutputError(f"{option} {out} exists and is not a folder emlc wrote (no {MARKERS['run']} or "
                          f"{MARKERS['export']} marker); --overwrite only replaces emlc's own folders: remove it "
                          f"yourself or choose another {option}")


def is_emlc_folder(path: Path) -> bool:
    """A folder emlc wrote: it holds a marker, or is a run folder from before the markers, or is empty."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    if any((path / marker).is_file() for marker in MARKERS.values()):
        return True
    if all((path / name).is_file() for name in LEGACY_RUN):
        return True
    return not any(path.iterdir())


def _is_staging(staged: Path) -> bool:
    return is_emlc_folder(staged) or (staged / STATE_FILE).is_file()


def run_inputs(run: Path) -> list[tuple[Path, str]]:
    """What a command reading `run` must never write into or replace: the run folder and its data (source.json)."""
    protected: list[tuple[Path, str]] = [(Path(run), "the run folder")]
    return protected + data_paths(run)


def data_paths(run: Path) -> list[tuple[Path, str]]:
    """The run's data root, location and labels file, from RUN/source.json (none if it cannot be read)."""
    try:
        record = read_json(Path(run) / SOURCE, required=False)
    except DataError:
        return []
    names = (("root", "the data folder"), ("location", "the data"), ("labels_csv", "the labels file"))
    return [(Path(record[key]), name) for key, name in names
            if isinstance(record.get(key), str) and record[key] and not record[key].startswith("hf:")]


def check_file_target(target: Path, run: Path, option: str, ours: Any) -> None:
    """A file a command writes (review --out / --png): never inside the run's data, never under a file, and
    an existing file is replaced only when `ours(path)` recognises it as one emlc wrote."""
    resolved = check_out_path(Path(target), option)
    check_not_inputs(resolved, data_paths(run), f"{option} {target}")
    if resolved.is_file() and not ours(resolved):
        raise OutputError(f"{option} {target} exists and was not written by emlc; remove it or choose another name")


class RunDir:
    """Write files into the staging folder; `commit()` renames it to `final` in one step.

    The staging folder is locked (`.NAME.partial.lock`) while this object lives, and marked as emlc's
    (`.emlc-run`, or `.emlc-export` for `kind="export"`). On an error everything this run wrote is removed,
    except a complete training state (then --resume continues from the last good checkpoint).
    """

    def __init__(self, final: Path, resume: bool = False, *, kind: str = "run", option: str = "--out") -> None:
        self.final, self.option = Path(final), option
        self.path = staging_path(self.final)
        check_out_path(self.final, option)
        self.lock = acquire_lock(self.final, option)
        try:
            check_own_path(self.path, "folder", "staging folder", option)  # checked before the run, and again here
            with writing(self.path):
                if not resume and self.path.exists():
                    if not _is_staging(self.path):  # checked before the run (check_out_dir), and again here
                        raise OutputError(f"{option} {final}: {self.path} exists and was not made by emlc; remove it yourself")
                    shutil.rmtree(self.path)
                self.path.mkdir(parents=True, exist_ok=True)
                marker = self.path / MARKERS["export" if kind == "export" else "run"]
                self._write(marker, lambda h: h.write(json.dumps({"written_by": "emlc", "kind": kind}) + "\n"))
        except BaseException:
            release_lock(self.lock)
            raise

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                self._discard()
        finally:
            release_lock(self.lock)

    def _discard(self) -> None:
        """Remove what this run wrote; a complete training state (and the marker) stays for --resume."""
        if not (self.path / STATE_FILE).is_file():
            shutil.rmtree(self.path, ignore_errors=True)
            return
        keep = {STATE_FILE, LOG_FILE, *MARKERS.values()}  # the log of the interrupted part, too
        for entry in self.path.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def _hint(self) -> str:
        if (self.path / STATE_FILE).is_file():
            return f"; the last complete training state is kept in {self.path}: free some space and rerun with --resume"
        return ""

    def writing(self, target: Path) -> contextlib.AbstractContextManager[None]:
        """For callers that write into `self.path` themselves: a full disk becomes one OutputError line."""
        return writing(target, self._hint())

    def _write(self, target: Path, fill: Any, newline: Optional[str] = None) -> Path:
        with writing(target, self._hint()):
            with open(target, "w", encoding="utf-8", newline=newline) as handle:
                fill(handle)
        return target

    def save_state(self, state: dict[str, Any]) -> None:
        """Atomic: a crash or a full disk mid-write leaves the previous state in place."""
        import torch

        target = self.path / STATE_FILE
        partial = target.with_suffix(".tmp")
        try:
            with writing(target, self._hint()):
                torch.save(state, partial)
                os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def load_state(self) -> dict[str, Any]:
        return load_training_state(self.path / STATE_FILE)

    def write_json(self, name: str, data: Any) -> Path:
        text = json.dumps(data, indent=2, default=_jsonable) + "\n"
        return self._write(self.path / name, lambda h: h.write(text))

    def write_text(self, name: str, text: str) -> Path:
        return self._write(self.path / name, lambda h: h.write(text))

    def write_csv(self, name: str, columns: Sequence[str], rows: list[list[Any]]) -> Path:
        def fill(handle: Any) -> None:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows(rows)

        return self._write(self.path / name, fill, newline="")

    def write_array(self, name: str, array: Any) -> Path:
        """A .npy file (numpy's format; `allow_pickle=False` reads it)."""
        import numpy as np

        target = self.path / name
        with writing(target, self._hint()):
            with open(target, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
        return target

    def write_model(self, stem: str, module: "torch.nn.Module", config: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        target = self.path / weights_file(stem)
        with writing(target, self._hint()):
            save_file(state, str(target))
        self.write_json(config_file(stem), config)

    def commit(self) -> Path:
        if self.final.exists() and not is_emlc_folder(self.final):  # checked before the run, and again here
            raise OutputError(f"{self.option} {self.final} exists and is not a folder emlc wrote; it was left untouched")
        (self.path / STATE_FILE).unlink(missing_ok=True)
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def load_model_files(run: Path, stem: str) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """Read `stem.safetensors` + `stem.json` from a run folder; a tampered or foreign file is one DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, described = Path(run) / weights_file(stem), Path(run) / config_file(stem)
    for f in (weights, described):
        if not f.is_file():
            raise DataError(NOT_A_RUN, path=f)
    config = read_json_file(described, "cannot read JSON")
    try:
        state = load_file(str(weights))
    except (OSError, ValueError, SafetensorError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"not a safetensors checkpoint ({first[:160]}); nothing in it was run", path=weights) from None
    check_model_config(config, state, described)
    return state, config


MODEL_KEYS = {"architecture": str, "num_classes": int, "classes": list, "width": int, "small_stem": bool,
              "input_size": int}


def check_model_config(config: Any, state: dict[str, Any], path: Path) -> None:
    """The keys and types a model is rebuilt from, and a class count that matches the weights."""
    if not isinstance(config, dict):
        raise DataError("expected a JSON object", path=path)
    for key, kind in MODEL_KEYS.items():
        value = config.get(key)
        if value is None:
            raise DataError(f"key '{key}' is missing", path=path)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)) or value == "":
            raise DataError(f"key '{key}' must be {'a positive integer' if kind is int else 'a ' + kind.__name__}, "
                            f"got {value!r:.60}", path=path)
    classes, count = config["classes"], config["num_classes"]
    if len(classes) != count or not all(isinstance(c, str) for c in classes):
        raise DataError(f"key 'classes' must list {count} class names (num_classes), got {len(classes)}", path=path)
    if not isinstance(config.get("in_features", 0), int) or isinstance(config.get("in_features"), bool):
        raise DataError("key 'in_features' must be an integer", path=path)
    check_preprocessing(config, path)
    frozen = config.get("frozen_backbone")
    if frozen is not None and not (isinstance(frozen, dict) and isinstance(frozen.get("architecture"), str)
                                   and isinstance(frozen.get("small_stem"), bool)):
        raise DataError("key 'frozen_backbone' must hold 'architecture' and 'small_stem'", path=path)
    for key, timm_record in (("frozen_backbone.timm", (frozen or {}).get("timm")), ("timm", config.get("timm"))):
        if timm_record is not None and not (isinstance(timm_record, dict) and isinstance(timm_record.get("architecture"), str)
                                            and isinstance(timm_record.get("kwargs"), dict)):
            raise DataError(f"key '{key}' must hold 'architecture' and 'kwargs'", path=path)
    for part in (frozen or {}).get("parts") or []:  # model.backbone=A+B: each part is a frozen backbone of its own
        if not isinstance(part, dict) or not isinstance(part.get("preprocessing"), dict) \
                or not isinstance(part["preprocessing"].get("size"), int):
            raise DataError("key 'frozen_backbone.parts' must list backbones with their 'preprocessing'", path=path)
        check_preprocessing({**part["preprocessing"], "input_size": part["preprocessing"]["size"]}, path)
    heads = sorted((k for k in state if k == "head.bias" or k.endswith(".head.bias")), key=len)
    if heads and tuple(state[heads[0]].shape) != (count,):
        raise DataError(f"key 'num_classes' is {count} but the weights' {heads[0]} has {tuple(state[heads[0]].shape)[0]} "
                        "classes", path=path)


def load_training_state(path: Path) -> dict[str, Any]:
    """Tensors and plain containers only (weights_only=True); anything pickled is refused."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OutputError(f"{path}: training state not found") from None
    except Exception as err:  # torch raises UnpicklingError / RuntimeError for non-tensor payloads
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OutputError(f"{path}: refused, not a tensors-only checkpoint ({first[:160]})") from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class NoOutputs:
    """What ranks other than 0 write in a distributed run: nothing (rank 0's RunDir holds the run)."""

    def __init__(self, final: Path) -> None:
        self.final, self.path = Path(final), staging_path(Path(final))

    def __enter__(self) -> "NoOutputs":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    save_state = write_json = write_text = write_csv = write_array = write_model = _nothing

    def commit(self) -> Path:
        return self.final
