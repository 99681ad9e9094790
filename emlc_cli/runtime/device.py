"""Device choice, seeding and threading. `resolve_device` is the one place a --device string is read.

Torch is imported only inside the functions that need it, so that `emlc clean` checks a --device string and
whether it runs under torchrun before torch is loaded (a bad input answers in well under a second)."""
from __future__ import annotations

import ctypes
import os
import random
from typing import TYPE_CHECKING, Optional

from emlc_cli.errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch

LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """True inside a torchrun worker (the launcher sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and all(k in os.environ for k in LAUNCH_ENV)


def is_main_process() -> bool:
    """Rank 0, or no launcher at all (before the process group exists, from the environment)."""
    return int(os.environ.get("RANK", "0")) == 0 if launched() else True


def parse_device(spec: str) -> tuple[str, Optional[int]]:
    """(`auto` | `cpu` | `cuda`, the CUDA index or None) of a --device string; anything else is one DeviceError."""
    text = spec.strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text, None
    index = text.partition(":")[2]
    if text.startswith("cuda:") and index.isdigit():
        return "cuda", int(index)
    raise DeviceError(f"--device '{text}': expected auto, cpu, cuda or cuda:N")


def resolve_device(spec: str = "auto") -> "torch.device":
    """auto = CUDA when present, else CPU. Asking for CUDA without one is an error, not a fallback. Under
    torchrun each process owns the GPU of its LOCAL_RANK: auto and cuda resolve to it, cuda:N is refused."""
    kind, index = parse_device(spec)
    import torch

    if launched() and kind != "cpu":
        if index is not None:
            raise DeviceError(f"--device {spec}: under torchrun each process uses the GPU of its LOCAL_RANK; pass --device cuda")
        if torch.cuda.is_available():
            index = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(index)
            kind = "cuda"
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        if "OMP_NUM_THREADS" not in os.environ:  # all cores unless the user pinned a thread count
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        return torch.device("cpu")
    named = "cuda" if index is None else f"cuda:{index}"
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {named}: no CUDA GPU is available here; use --device cpu or auto")
    if (index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"--device {named}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device(named)


def check_nproc(nproc: int, device: str) -> None:
    """One process per GPU: more processes than GPUs is an error unless the run is on the CPU."""
    kind, _ = parse_device(device)
    import torch

    if kind == "cpu" or not torch.cuda.is_available():
        return
    if nproc > torch.cuda.device_count():
        raise UsageError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         "use at most that many, or --device cpu")


def seed_everything(seed: int) -> "torch.Generator":
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def release_freed_heap() -> None:
    """Hand glibc's freed heap back to the system. Decoder threads leave buffers in per-thread arenas, and
    batch after batch of eval-mode activations fragment the heap once glibc's adaptive mmap threshold has risen
    (prediction over 1M images grew the process by 5 GB, benchmarks/RESULTS.md). A no-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
