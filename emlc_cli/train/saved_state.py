"""What the trainer part of a training state must hold before `--resume` applies any of it: every key of the
right type and range for the trainer it resumes (weights and optimiser slots shaped as its networks, sampler
orders that are passes over its rows, one generator state per process, a position inside the recipe's epochs).
A state that is not is refused in one line naming the file and the key; nothing has trained or been written."""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emlc_cli.errors import OutputError
from emlc_cli.train.events import EpochReport
from emlc_cli.train.resume import START_AFRESH

if TYPE_CHECKING:
    from emlc_cli.cache.batches import ShuffledSampler
    from emlc_cli.train.trainer import MetaTrainer


class _Refused(Exception):
    def __init__(self, key: str, what: str) -> None:
        super().__init__(key, what)
        self.key, self.what = key, what


def check_trainer_state(state: dict[str, Any], path: Path, trainer: "MetaTrainer") -> None:
    """Refuse (OutputError naming `path` and the key) a trainer state `trainer` could not continue from exactly."""
    try:
        _world(state, trainer.world.size)
        _position(state, trainer.recipe.train.epochs, trainer.steps_per_epoch)
        _models(state, trainer)
        _optimisers(state, trainer)
        for name in ("noisy_sampler", "clean_sampler"):
            _sampler(_get(state, name, dict), name, getattr(trainer, name))
        _generators(state, trainer.world.size)
        _best(state, trainer)
    except _Refused as refused:
        raise OutputError(f"{path}: key 'trainer.{refused.key}' {refused.what}; {START_AFRESH}") from None


def _get(state: dict[str, Any], key: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
    value = state.get(key) if isinstance(state, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _Refused(prefix + key, f"must be a {names}, got {type(value).__name__}")
    return value


def _int_in(state: dict[str, Any], key: str, low: int, high: int, prefix: str = "") -> int:
    value = _get(state, key, int, prefix)
    if not low <= value <= high:
        raise _Refused(prefix + key, f"is {value}, outside {low}..{high}")
    return value


def _world(state: dict[str, Any], size: int) -> None:
    saved = _get(state, "world_size", int)
    if saved != size:
        raise OutputError(f"--resume: the run was saved by {saved} process(es); resume it with the same number (now {size})")


def _position(state: dict[str, Any], epochs: int, steps: int) -> None:
    """epoch in 0..epochs (the next one to run), step in 0..steps, and one history entry per epoch done."""
    epoch = _int_in(state, "epoch", 0, epochs)
    _int_in(state, "step", 0, steps if epoch < epochs else 0)
    history = _get(state, "history", list)
    if len(history) != epoch:
        raise _Refused("history", f"holds {len(history)} epochs, but 'epoch' says {epoch} are done")
    for number, report in enumerate(history):
        _epoch_report(report, number)


def _epoch_report(report: Any, number: int) -> None:
    key = f"history.{number}"
    names = [f.name for f in fields(EpochReport)]
    if not isinstance(report, dict) or sorted(report) != sorted(names):
        raise _Refused(key, f"must hold exactly {', '.join(names)}")
    if report["epoch"] != number or report["phase"] not in ("warmup", "meta") or not isinstance(report["best"], bool):
        raise _Refused(key, f"is not the report of epoch {number}")
    for name in ("student_holdout_acc", "teacher_holdout_acc", "score", "seconds"):
        if not isinstance(report[name], (int, float)) or isinstance(report[name], bool):
            raise _Refused(f"{key}.{name}", f"must be a number, got {type(report[name]).__name__}")


def _models(state: dict[str, Any], trainer: "MetaTrainer") -> None:
    models = _get(state, "models", dict)
    for name, module in (("student", trainer.student), ("teacher", trainer.teacher)):
        _tensors_like(_get(models, name, dict, "models."), module.state_dict(), f"models.{name}")


def _tensors_like(saved: dict[str, Any], expected: dict[str, torch.Tensor], key: str) -> None:
    """The same names as the network's state dict, each a tensor of its shape and dtype."""
    if set(saved) != set(expected):
        odd = sorted(map(str, set(saved) ^ set(expected)))[0]
        raise _Refused(key, f"does not hold this run's network ({odd!r:.60} {'missing' if odd in expected else 'unknown'})")
    for name, tensor in expected.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape or value.dtype != tensor.dtype:
            got = f"{value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise _Refused(f"{key}.{name}", f"must be a {tensor.dtype} tensor of shape {list(tensor.shape)}, got {got}")


def _optimisers(state: dict[str, Any], trainer: "MetaTrainer") -> None:
    for name, optimiser in (("student_opt", trainer.student_opt), ("teacher_opt", trainer.teacher_opt)):
        saved = _get(state, name, dict)
        groups = _get(saved, "param_groups", list, f"{name}.")
        expected = optimiser.state_dict()["param_groups"]
        if len(groups) != len(expected) or not all(isinstance(g, dict) for g in groups):
            raise _Refused(f"{name}.param_groups", f"must be {len(expected)} parameter group(s)")
        for number, (group, live) in enumerate(zip(groups, expected)):
            changed = [k for k in live if k != "lr" and not _same(group.get(k), live[k])]
            if changed:
                raise _Refused(f"{name}.param_groups.{number}.{changed[0]}", f"is {group.get(changed[0])!r:.40}, "
                                                                            f"expected {live[changed[0]]!r:.40}")
        shapes = [p.shape for group in optimiser.param_groups for p in group["params"]]
        _slots(_get(saved, "state", dict, f"{name}."), shapes, f"{name}.state")


def _same(saved: Any, live: Any) -> bool:
    """A hyperparameter as the recipe sets it (a tensor planted there compares as different, never raises)."""
    try:
        return not isinstance(saved, torch.Tensor) and bool(saved == live)
    except (RuntimeError, TypeError, ValueError):
        return False


def _slots(slots: dict[Any, Any], shapes: list[torch.Size], key: str) -> None:
    """Each parameter's optimiser slots (momentum, Adam's averages): tensors of its shape, or a scalar step."""
    for index, slot in slots.items():
        if not isinstance(index, int) or not 0 <= index < len(shapes) or not isinstance(slot, dict):
            raise _Refused(f"{key}.{index!s:.20}", f"is not a slot of one of the {len(shapes)} parameters")
        for name, value in slot.items():
            ok = isinstance(value, torch.Tensor) and value.is_floating_point() and (
                value.shape == shapes[index] or (name == "step" and value.dim() == 0))
            if not ok:
                raise _Refused(f"{key}.{index}.{name}", f"must be a float tensor of shape {list(shapes[index])}")


def _sampler(saved: dict[str, Any], key: str, sampler: "ShuffledSampler") -> None:
    """An order that is empty (no pass begun) or one pass as new_pass draws it: every row of the set the same
    number of times; a position inside it."""
    order = _get(saved, "order", torch.Tensor, f"{key}.")
    repeats = -(-sampler.batch_size // sampler.size) if 0 < sampler.size < sampler.batch_size else 1
    if len(order):
        counts = torch.bincount(order, minlength=sampler.size) if _rows(order, sampler.size) else None
        if counts is None or len(counts) != sampler.size or bool((counts != repeats).any()):
            raise _Refused(f"{key}.order", f"is not a shuffle of this run's {sampler.size} rows")
    _int_in(saved, "position", 0, len(order), f"{key}.")


def _rows(order: torch.Tensor, size: int) -> bool:
    return order.dtype == torch.int64 and order.dim() == 1 and int(order.min()) >= 0 and int(order.max()) < size


def _generators(state: dict[str, Any], world: int) -> None:
    _generator_state(state.get("shuffle_generator"), "shuffle_generator")
    for key in ("generator", "torch_rng"):
        per_process = _get(state, key, list)
        if len(per_process) != world:
            raise _Refused(key, f"must hold one generator state per process ({world}), got {len(per_process)}")
        for rank, value in enumerate(per_process):
            _generator_state(value, f"{key}.{rank}")


def _generator_state(value: Any, key: str) -> None:
    try:
        torch.Generator().set_state(value)
    except (TypeError, RuntimeError, ValueError):
        raise _Refused(key, "is not a generator state") from None


def _best(state: dict[str, Any], trainer: "MetaTrainer") -> None:
    """best_state is empty until a meta epoch scored (best_score -1.0); then the networks' weights, with the
    holdout accuracy in 0..1 (without a holdout the score is the epoch's number)."""
    score, best = _get(state, "best_score", (int, float)), _get(state, "best_state", dict)
    if isinstance(score, bool) or not math.isfinite(score):
        raise _Refused("best_score", f"must be a finite number, got {score!r:.20}")
    if not best:
        if score != -1:
            raise _Refused("best_score", f"is {score:g} but 'best_state' is empty (no epoch scored yet: -1)")
        return
    high = 1 if len(trainer.holdout) else trainer.recipe.train.epochs - 1
    if not 0 <= score <= high:
        raise _Refused("best_score", f"is {score:g}, outside 0..{high}")
    for name, module in (("student", trainer.student), ("teacher", trainer.teacher)):
        _tensors_like(_get(best, name, dict, "best_state."), module.state_dict(), f"best_state.{name}")
