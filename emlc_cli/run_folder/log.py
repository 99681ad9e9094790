"""The run's log file, `emlc.log` in the run folder: the command line, the versions, what the console showed
(the inputs line, every epoch, warnings) and how the run ended. Appended to, so a --resume adds to the log of
the run it continues. Torch-free: versions are read from the installed packages' metadata."""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

LOG_FILE = "emlc.log"
TRANSCRIPT = "emlc_cli.transcript"  # the logger console.py sends its lines to; only the run's log file listens


def transcript() -> logging.Logger:
    """The logger of what the console shows: INFO, not propagated (its lines are on the console already)."""
    logger = logging.getLogger(TRANSCRIPT)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = _dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        if record.name == TRANSCRIPT:
            return f"{stamp} {record.getMessage()}"
        return f"{stamp} {record.levelname.lower()}: {record.getMessage()} [{record.name}]"


@contextlib.contextmanager
def recording(folder: Optional[Path], command: Optional[str], prepared: Any = None) -> Iterator[None]:
    """Append to `folder/emlc.log` while the block runs (nothing when `folder` is None: ranks other than 0)."""
    if folder is None:
        yield
        return
    from emlc_cli.errors import EmlcError, install_log_filter

    handler = logging.FileHandler(Path(folder) / LOG_FILE, mode="a", encoding="utf-8")
    handler.setFormatter(_Format())
    handler.setLevel(logging.INFO)
    root, lines = logging.getLogger(), transcript()
    root.addHandler(handler)
    lines.addHandler(handler)
    install_log_filter()  # the token never reaches the file either
    try:
        for line in header(command, prepared):
            lines.info(line)
        yield
        lines.info(outcome(Path(folder)))
    except EmlcError as err:
        lines.info(f"stopped: {err.one_line()}")
        raise
    except BaseException as err:
        lines.info(f"failed: {type(err).__name__}: {err}")
        raise
    finally:
        root.removeHandler(handler)
        lines.removeHandler(handler)
        handler.close()


def header(command: Optional[str], prepared: Any = None) -> list[str]:
    """What a log starts with: when, where, the command, the versions; the inputs and their warnings."""
    lines = [f"--- emlc run started {_dt.datetime.now().isoformat(timespec='seconds')} in {os.getcwd()}",
             f"command: {command or ' '.join(sys.argv)}", f"versions: {versions()}"]
    if prepared is not None:
        lines.append(f"inputs: {prepared.describe()}")
        lines += [f"warning: {message}" for message in prepared.warnings]
    return lines


def outcome(folder: Path) -> str:
    """The last line: what the run found, from the summary.json it has just written."""
    from emlc_cli.errors import DataError
    from emlc_cli.jsonfile import read_json_file

    try:
        summary = read_json_file(folder / "summary.json")
        line = (f"done in {summary['wall_seconds']:.0f}s: {summary['changed']} of {summary['noisy']} noisy labels changed, "
                f"best holdout accuracy {summary['best_holdout_score']:.3f}")
    except (DataError, KeyError, TypeError, ValueError):
        return "done"
    estimate = summary.get("label_accuracy") or {}
    if isinstance(estimate.get("given"), dict) and isinstance(estimate.get("corrected"), dict):
        line += f", label accuracy estimated {estimate['given']['estimate']:.1%} -> {estimate['corrected']['estimate']:.1%}"
    skipped = summary.get("skipped") or {}
    return line + (f"; {len(skipped)} unreadable images skipped: {', '.join(list(skipped)[:10])}" if skipped else "")


def versions() -> str:
    found = []
    for package in ("emlc", "torch", "torchvision", "numpy", "datasets"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found + [f"python {sys.version.split()[0]}", platform.platform()])
