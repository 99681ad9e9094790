"""The lock on a run's staging folder: `.NAME.partial.lock`, holding the writer's pid and host, created
atomically; a lock whose process is gone is taken over, a live one refused."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Optional

from emlc_cli.errors import OutputError
from emlc_cli.run_folder.layout import lock_path

log = logging.getLogger(__name__)


def lock_holder(lock: Path) -> Optional[int]:
    """The pid of the live process holding `lock`; None when there is no lock or its process is gone."""
    try:
        info = json.loads(Path(lock).read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info.get("host", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: no live holder (acquire_lock removes only a lock emlc wrote)
    if host and host != socket.gethostname():
        return pid  # another machine's process: cannot tell, so it counts as running
    return pid if process_alive(pid) else None


def is_emlc_lock(lock: Path) -> bool:
    """A lock file emlc wrote (JSON with a pid): only such a file is ever taken over and removed."""
    try:
        return isinstance(json.loads(Path(lock).read_text(encoding="utf-8")).get("pid"), int)
    except (OSError, ValueError, AttributeError):
        return False


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
        holder = lock_holder(lock)
        if holder is not None:
            raise OutputError(f"{option} {out}: another emlc run (pid {holder}) is writing it ({lock}); "
                              f"wait for it to finish or choose another {option}")
        if not is_emlc_lock(lock):
            raise OutputError(f"{option} {out}: {lock} exists and is not an emlc lock; remove it yourself")
        log.warning("taking over the stale lock %s (its process is gone)", lock)
        lock.unlink(missing_ok=True)
    raise OutputError(f"{option} {out}: cannot take the lock {lock}")


def _create_lock(lock: Path) -> bool:
    """Write our pid to a temporary file and link it into place: the lock appears complete or not at all."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(tmp.read_text(encoding="utf-8"))
        return True
    finally:
        tmp.unlink(missing_ok=True)


def release_lock(lock: Path) -> None:
    """Remove the lock if it is still ours."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(Path(lock).read_text(encoding="utf-8"))["pid"]) == os.getpid():
            Path(lock).unlink()
