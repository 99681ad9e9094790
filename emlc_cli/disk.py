"""A full disk (or any OS write error) while writing a file becomes one OutputError line."""
from __future__ import annotations

import contextlib
import errno
import shutil
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
