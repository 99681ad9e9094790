"""Several processes, one run: the process group and the few collectives the trainer and pipeline need.

One process per device, started by torchrun (or by `emlc clean --nproc N`, which runs torchrun on this
machine). Every function here is a no-op, or the identity, in a single process, so callers need no branches.
Backend: nccl on CUDA, gloo on CPU.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.distributed_c10d import default_pg_timeout

from emlc_cli.errors import EmlcError, LaunchError, UsageError
from emlc_cli.runtime.device import (LAUNCH_ENV, TIMEOUT_ENV, Launch, is_main_process,  # noqa: F401 - torch-free;
                                     launch_env, launched)  # re-exported here
from emlc_cli.runtime.nodes import Nodes, rendezvous_failure

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), launch_env().local_rank, dist.get_backend())


def init(device: torch.device) -> World:
    """Join the process group torchrun describes (once); single-process runs return World(). Joining waits at
    most EMLC_DIST_TIMEOUT seconds for the other processes; once joined, collectives keep torch's own limit
    (rank 0 may write a large run folder while the others wait)."""
    launch = launch_env()
    if not launch.distributed:
        return World()
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=launch.timeout_s))
        except dist.DistError as err:
            log.debug("joining the process group failed: %s", err)
            raise LaunchError(_no_reply(launch)) from None
        dist.set_timeout(default_pg_timeout)
        _tag_log_lines(dist.get_rank())
    return world()


def _no_reply(launch: Launch) -> str:
    return (f"the other processes did not join within {launch.timeout_s:g} s ({TIMEOUT_ENV}): WORLD_SIZE={launch.world_size} "
            f"processes expected at MASTER_ADDR:MASTER_PORT={launch.endpoint}; start every node's torchrun with the same "
            f"--nnodes and --rdzv-endpoint, or raise {TIMEOUT_ENV}")


def _tag_log_lines(rank: int) -> None:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"rank {rank}: %(levelname)s %(name)s: %(message)s"))


def shutdown() -> None:
    """Leave the process group together: a rank that tore gloo down while rank 0 was still writing its outputs
    was aborted once (SIGABRT, "terminate called without an active exception") instead of exiting 0."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.barrier()
    except RuntimeError as err:  # another rank has already gone (it failed): there is nobody left to wait for
        log.debug("shutdown: barrier failed (%s)", err)
    dist.destroy_process_group()


# ---- collectives (identity in one process) ------------------------------------------------------
def _comm_device() -> torch.device:
    """nccl moves only CUDA tensors; gloo moves CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if world().backend == "nccl" else torch.device("cpu")


def average_(tensors: Iterable[Tensor]) -> None:
    """All-reduce-average in place, coalesced into one flat buffer per dtype (one call instead of one per tensor)."""
    w = world()
    if not w.distributed:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= w.size
        offset = 0
        for t in group:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients_(module: nn.Module) -> None:
    average_(p.grad for p in module.parameters() if p.grad is not None)


def broadcast_state_(module: nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers (BatchNorm running statistics) everywhere."""
    if not world().distributed:
        return
    tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def all_agree(flag: bool) -> bool:
    """True only if every rank says True (e.g. 'the loss is finite')."""
    if not world().distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def any_rank(flag: bool) -> bool:
    """True if any rank says True (e.g. 'a stop signal arrived'), so all ranks stop at the same step."""
    return not all_agree(not flag)


def gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (pickled; only ever our own processes' data)."""
    w = world()
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T) -> T:
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_shards_(rows: Tensor) -> None:
    """`rows` [total, ...] holds this rank's shard (see `shard`); fill in every other rank's, in place, one
    shard at a time (no second full-size buffer: the tensor may be a memory-mapped file)."""
    w = world()
    if not w.distributed:
        return
    device = _comm_device()
    for rank in range(w.size):
        part = shard(len(rows), w.size, rank)
        if not len(part):
            continue
        buffer = rows[part.start: part.stop].to(device) if rank == w.rank else torch.empty(
            (len(part), *rows.shape[1:]), dtype=rows.dtype, device=device)
        dist.broadcast(buffer, src=rank)
        if rank != w.rank:
            rows[part.start: part.stop] = buffer.to(rows.device)


def gather_rows_to_main(part: Tensor, total: int) -> Tensor | None:
    """Each rank's contiguous shard of rows (see `shard`) -> the full [total, ...] tensor on rank 0, None on the
    others: point to point, one shard at a time, so only rank 0 ever holds all rows (no pickling)."""
    w = world()
    if not w.distributed:
        return part
    device = _comm_device()
    if not w.is_main:
        if len(part):
            dist.send(part.contiguous().to(device), dst=0)
        return None
    out = torch.empty((total, *part.shape[1:]), dtype=part.dtype)
    for rank in range(w.size):
        rows = shard(total, w.size, rank)
        if rank == 0:
            out[rows.start: rows.stop] = part
        elif len(rows):
            buffer = torch.empty((len(rows), *part.shape[1:]), dtype=part.dtype, device=device)
            dist.recv(buffer, src=rank)
            out[rows.start: rows.stop] = buffer.cpu()
    return out


def shard(total: int, size: int, rank: int) -> range:
    """Rank `rank`'s contiguous share of `total` items (the first shards take the remainder)."""
    width = -(-total // size)
    return range(min(total, rank * width), min(total, (rank + 1) * width))


def max_difference(module: nn.Module) -> float:
    """Largest |rank r's value - rank 0's value| over all parameters and buffers (0.0 when in sync)."""
    if not world().distributed:
        return 0.0
    with torch.no_grad():
        mine = torch.cat([t.detach().float().reshape(-1) for t in list(module.parameters()) + list(module.buffers())]).to(_comm_device())
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        worst = (mine - reference).abs().max().reshape(1)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst.item())


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result, or its EmlcError, to every rank, so that all ranks
    fail together with the same one-line message instead of waiting for each other."""
    if not world().distributed:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    if world().is_main:
        try:
            outcome = ("ok", fn())
        except EmlcError as err:
            outcome = ("error", (err.one_line(), err.exit_code))
    kind, value = broadcast_object(outcome)
    if kind == "error":
        failure = EmlcError(value[0])
        failure.exit_code = value[1]
        raise failure
    return value


def barrier() -> None:
    if world().distributed:
        dist.barrier()


# ---- the --nproc / --nnodes convenience ------------------------------------------------------------
LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--rdzv-endpoint", "--local-addr")  # each takes a value


def command_args(command: str, argv: list[str]) -> list[str]:
    """`emlc ... clean A B --nproc 2 C --nnodes=2` -> ["clean", "A", "B", "C"]: what each worker runs."""
    if command not in argv:
        raise UsageError(f"--nproc: cannot find the '{command}' command in the command line; run it as "
                         f"torchrun --nproc-per-node N -m emlc_cli {command} ...")
    args, skip = argv[argv.index(command):], False
    kept = []
    for arg in args:
        if skip:
            skip = False
        elif arg in LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in LAUNCH_OPTIONS)):
            kept.append(arg)
    return kept


def launch(nproc: int, command_args: list[str], nodes: Nodes = Nodes()) -> int:
    """Run `emlc <command_args>` as torchrun with `nproc` processes on this machine (`--standalone`), or on each of
    `nodes.count` machines meeting at `nodes.endpoint`; the exit code is the workers' (2 for a user error, 130 when
    interrupted), and rank 0 has already printed why. A rendezvous that does not complete is one LaunchError
    naming the endpoint, after at most EMLC_DIST_TIMEOUT seconds.

    On CPU each process gets an equal share of the cores (torchrun alone would pin every process to 1 thread)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if not os.environ.get("EMLC_DEBUG"):  # torchrun's own failure report repeats what rank 0 printed
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = [*nodes.torchrun_args(), f"--nproc-per-node={nproc}", "-m", "emlc_cli", *command_args]
    log.info("launching: torchrun %s", " ".join(args))
    try:
        run(parse_args(args))
    except ChildFailedError as err:
        return int(err.get_first_failure()[1].exitcode) or 1
    except SignalException:
        return 130
    except RendezvousError as err:
        log.debug("the rendezvous failed", exc_info=True)
        raise LaunchError(rendezvous_failure(nodes, err)) from None
    return 0
