"""A full disk (or any OS write error) while writing a file becomes one OutputError line."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
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
    if target.is_dir():
        raise OutputError(f"{target} is a folder; pass a file name")
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
