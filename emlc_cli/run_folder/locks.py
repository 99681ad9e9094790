"""The lock on a run's staging folder: `.NAME.partial.lock`, holding the writer's pid and host, created
atomically; a lock whose process is gone is taken over, a live one refused."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Optional

from emlc_cli.run_folder.disk import path_kind, read_regular
from emlc_cli.errors import OutputError
from emlc_cli.run_folder.layout import lock_path

log = logging.getLogger(__name__)
LOCK_BYTES = 4096  # a lock emlc writes is under 100 bytes


def lock_holder(lock: Path, option: str = "--out") -> Optional[int]:
    """The pid of the live process holding `lock`; None when there is no lock or its process is gone."""
    info = _read_lock(lock, option)
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return None  # unreadable: no live holder (acquire_lock removes only a lock emlc wrote)
    host = str(info.get("host", ""))
    if host and host != socket.gethostname():
        return pid  # another machine's process: cannot tell, so it counts as running
    return pid if process_alive(pid) else None


def is_emlc_lock(lock: Path, option: str = "--out") -> bool:
    """A lock file emlc wrote (JSON with a pid): only such a file is ever taken over and removed."""
    info = _read_lock(lock, option)
    return isinstance(info, dict) and isinstance(info.get("pid"), int) and not isinstance(info.get("pid"), bool)


def check_own_path(path: Path, want: str, name: str, option: str = "--out") -> None:
    """emlc's own path beside --out (`name`: its lock file, staging folder, training state) is absent or a plain
    `want` ('file' or 'folder'): a symbolic link, FIFO or device there is never followed, opened or replaced."""
    kind = path_kind(path)
    if kind not in ("missing", want):
        what = {"link": "a symbolic link", "special": "a FIFO, socket or device"}.get(kind, f"a {kind}")
        raise OutputError(f"{option}: {path} is {what}, not emlc's {name}; emlc never follows, opens or replaces it: "
                          f"remove it yourself or choose another {option}")


def _read_lock(lock: Path, option: str) -> Any:
    """The lock's JSON (None when it is absent or not JSON), read without following a link or opening a FIFO
    or device, and at most LOCK_BYTES of it."""
    check_own_path(Path(lock), "file", "lock file", option)
    try:
        return json.loads(read_regular(Path(lock), LOCK_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one owned by another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(out: Path, option: str = "--out") -> Path:
    """Create the lock atomically; a lock whose process is gone is taken over, a live one refused (exit 2)."""
    lock = lock_path(out)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {out}: cannot create {lock.parent} ({err.strerror or err})") from None
    for _ in range(3):
        if _create_lock(lock):
            return lock
        holder = lock_holder(lock, option)
        if holder is not None:
            raise OutputError(f"{option} {out}: another emlc run (pid {holder}) is writing it ({lock}); "
                              f"wait for it to finish or choose another {option}")
        if not is_emlc_lock(lock, option):
            raise OutputError(f"{option} {out}: {lock} exists and is not an emlc lock; remove it yourself")
        log.warning("taking over the stale lock %s (its process is gone)", lock)
        lock.unlink(missing_ok=True)
    raise OutputError(f"{option} {out}: cannot take the lock {lock}")


def _create_lock(lock: Path) -> bool:
    """Write our pid to a temporary file and link it into place: the lock appears complete or not at all."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    try:
        tmp.unlink(missing_ok=True)  # a stale one of a process with our pid, or a link planted there: never followed
        _write_new(tmp, text)
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links
        try:
            _write_new(lock, text)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, text: str) -> None:
    """Create `path` afresh: an existing file, or a link planted there, is an OSError, never followed."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def release_lock(lock: Path) -> None:
    """Remove the lock if it is still ours."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, OutputError):
        if lock_holder(lock) == os.getpid():
            Path(lock).unlink()
