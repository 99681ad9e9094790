"""Device choice, seeding and threading. `resolve_device` is the one place a --device string is read.

Torch is imported only inside the functions that need it, so that `emlc clean` checks a --device string and
whether it runs under torchrun before torch is loaded (a bad input answers in well under a second)."""
from __future__ import annotations

import ctypes
import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from emlc_cli.errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch

LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_ENV = "EMLC_DIST_TIMEOUT"
# How long a process waits for the others to join, and then at any collective: long enough for a node that starts
# a minute late or a rank 0 that writes a large run folder while the others wait, short of torch's 30 minutes.
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Launch:
    """torchrun's variables for this process, validated; a plain run is the defaults (one process, rank 0)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = ""
    master_port: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def endpoint(self) -> str:
        return f"{self.master_addr}:{self.master_port}"


def launch_env() -> Launch:
    """The one place torchrun's variables are read: each one checked, or one UsageError naming it and what it
    should hold. WORLD_SIZE unset or 1 is a plain run (the other variables are then not read)."""
    size = _whole("WORLD_SIZE", 1, default=1)
    if size == 1:
        return Launch()
    missing = [name for name in LAUNCH_ENV if name not in os.environ]
    if missing:
        raise UsageError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: run emlc under torchrun (or with "
                         "--nproc), which sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or unset WORLD_SIZE")
    rank = _whole("RANK", 0, size - 1)
    local_size = _whole("LOCAL_WORLD_SIZE", 1, size, default=size)
    return Launch(size, rank, _whole("LOCAL_RANK", 0, local_size - 1), local_size, _address(),
                  _whole("MASTER_PORT", 1, 65535), join_timeout_s())


def join_timeout_s() -> float:
    """EMLC_DIST_TIMEOUT, checked: how long a process (or a machine, at the rendezvous) waits for the others."""
    return _seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def _whole(name: str, low: int, high: int | None = None, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    text = (raw or "").strip()
    value = int(text) if text.isdigit() and len(text) <= 6 else -1
    if not low <= value <= (high if high is not None else 10**6):
        limit = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise UsageError(f"{name}={raw!r}: expected a whole number {limit} (torchrun sets it)")
    return value


def _address() -> str:
    raw = os.environ["MASTER_ADDR"]
    if not raw.strip() or any(c.isspace() for c in raw) or len(raw) > 253:
        raise UsageError(f"MASTER_ADDR={raw!r}: expected the host name or address of rank 0 (torchrun sets it)")
    return raw


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:  # NaN fails too
        raise UsageError(f"{name}={raw!r}: expected seconds to wait for the other processes, above 0 and at most 86400")
    return value


def launched() -> bool:
    """True inside a torchrun worker (the launcher sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)."""
    return launch_env().distributed


def is_main_process() -> bool:
    """Rank 0, or no launcher at all (before the process group exists, from the environment)."""
    return launch_env().rank == 0


def prints_errors() -> bool:
    """Whether this process prints a user error: rank 0, and the first process of every other machine, so that
    each node's console says why its run stopped. True also when the variables themselves are invalid."""
    launch = _launch_or_plain()
    return launch.rank == 0 or launch.local_rank == 0


def rank_prefix() -> str:
    """`rank N: ` before the lines of a process other than rank 0 (nothing for rank 0 or a plain run)."""
    rank = _launch_or_plain().rank
    return f"rank {rank}: " if rank else ""


def _launch_or_plain() -> Launch:
    """For printing only: invalid variables are reported (launch_env's error) by a process that prints."""
    try:
        return launch_env()
    except UsageError:
        return Launch()


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
            index = launch_env().local_rank
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
