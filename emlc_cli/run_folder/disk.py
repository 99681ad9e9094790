"""A full disk (or any OS write error) while writing a file becomes one OutputError line."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from emlc_cli.errors import OutputError

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
WRITE_FAILED = ("No space left", "StorageFull", "Disk quota", "failed writing", "write failed", "unexpected pos")


def is_no_space(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, or a writer (torch.save, safetensors) that reports a failed write in its text."""
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        return True
    writer = isinstance(err, RuntimeError) or type(err).__name__ == "SafetensorError"
    return writer and any(text in str(err) for text in WRITE_FAILED)


def free_mb(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free // 2**20
    except OSError:
        return 0


@contextlib.contextmanager
def writing(target: Path, hint: str = "") -> Iterator[None]:
    """Turn a full disk (or any OS write error) while writing `target` into one OutputError line."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - filtered below; anything else propagates unchanged
        if is_no_space(err):
            raise OutputError(f"no space left while writing {target} ({free_mb(target)} MB free){hint}") from None
        if isinstance(err, OSError):
            raise OutputError(f"{target}: cannot write ({err.strerror or err}){hint}") from None
        raise


def write_atomic(target: Path, data: bytes) -> None:
    """`data` into `target` via a temporary file beside it and one rename: the old file, or nothing, until the
    new one is complete. Only that temporary file is ever removed."""
    target = Path(target)
    check_replaceable(target)
    tmp: str | None = None
    try:
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
            tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def check_replaceable(target: Path, option: str = "") -> None:
    """A file a command writes by name may replace only a regular file: never a folder, a symlink (whose target
    is not ours to judge), a FIFO, a socket or a device (as root, `--out /dev/null` would replace /dev/null)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise OutputError(f"{option + ' ' if option else ''}{target}: cannot check ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise OutputError(f"{option + ' ' if option else ''}{target} is {kind}; emlc replaces only a regular file "
                          "it wrote: choose another name")


_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_regular(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path`, opened without following a symbolic link or waiting on a FIFO; OSError
    when it is a link, not a regular file (a FIFO or a device is never read), or larger than `limit`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks, read = [], 0
        while read <= limit:
            chunk = os.read(fd, limit + 1 - read)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            read += len(chunk)
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    finally:
        os.close(fd)


def path_kind(path: Path) -> str:
    """What is at `path`, its link not followed: 'missing', 'file', 'folder', 'link' or 'special'."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if stat.S_ISLNK(mode):
        return "link"
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "special"
