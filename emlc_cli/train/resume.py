"""What --resume checks: the saved state is emlc's, and the inputs are those it was saved with.

A run continues only from the same data listing and labels, the same verified set, the same resolved recipe
and the same seed (the process count is checked by the trainer); anything else would silently mix two runs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from emlc_cli.errors import OutputError
from emlc_cli.recipe.schema import Recipe

STATE_KEYS = {"trainer": dict, "recipe": dict, "seed": int, "inputs": dict}
START_AFRESH = "run the command as it was, or drop --resume and pass --overwrite to start afresh"


def fingerprint(paths: list[str], labels: np.ndarray, classes: list[str], verified: dict[int, int], recipe: dict[str, Any],
                seed: int, unsampled: set[int] | None = None) -> dict[str, Any]:
    """Digests of the inputs a training state depends on (the recipe kept whole, to name a changed key). Verified
    images that sample no noise (`unsampled`: emlc picked them, or they were filed under their verified class)
    change the holdout, so they are part of the verified set's digest (when there are any; tagged "picked", as
    the states written before filed images existed are)."""
    pairs: list[Any] = sorted((int(i), int(label)) for i, label in verified.items())
    return {
        "data": _digest([paths, np.asarray(labels).tolist(), classes]),
        "classes": list(classes),
        "verified": _digest(pairs + [["picked", sorted(int(i) for i in unsampled)]] if unsampled else pairs),
        "recipe": recipe,
        "seed": int(seed),
    }


def check_state(state: Any, path: Path) -> dict[str, Any]:
    """A training state emlc wrote: the keys it needs, of the right types."""
    if not isinstance(state, dict):
        raise OutputError(f"{path}: not an emlc training state; {START_AFRESH}")
    for key, kind in STATE_KEYS.items():
        if not isinstance(state.get(key), kind):
            raise OutputError(f"{path}: not an emlc training state (no valid '{key}'); {START_AFRESH}")
    return state


def check_same_inputs(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume whose inputs differ from the interrupted run's, naming the first difference."""
    if saved.get("classes") != now["classes"]:
        raise OutputError(f"--resume: the classes changed since the run was interrupted ({_short(saved.get('classes'))} -> "
                          f"{_short(now['classes'])}); {START_AFRESH}")
    if saved.get("data") != now["data"]:
        raise OutputError(f"--resume: the data (image list or given labels) changed since the run was interrupted; {START_AFRESH}")
    if saved.get("verified") != now["verified"]:
        raise OutputError(f"--resume: the verified set (--clean) changed since the run was interrupted; {START_AFRESH}")
    if saved.get("seed") != now["seed"]:
        raise OutputError(f"--resume: --seed {now['seed']} differs from the interrupted run's {saved.get('seed')}; {START_AFRESH}")
    changed = _first_difference(_with_new_keys(saved.get("recipe"), now["recipe"]), now["recipe"])
    if changed:
        raise OutputError(f"--resume: the recipe changed since the run was interrupted ({changed}); {START_AFRESH}")


def _with_new_keys(old: Any, new: dict[str, Any]) -> Any:
    """A state saved before a recipe key existed ran with that key's default: take the key as unchanged when the
    resumed run keeps the default."""
    if not isinstance(old, dict):
        return old
    defaults = Recipe().to_dict()
    merged = {section: dict(values) if isinstance(values, dict) else values for section, values in old.items()}
    for section, values in new.items():
        for key, value in values.items() if isinstance(values, dict) else ():
            if isinstance(merged.get(section), dict) and key not in merged[section] \
                    and value == defaults.get(section, {}).get(key, object()):
                merged[section][key] = value
    return merged


def _first_difference(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            found = _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
            if found:
                return found
        return ""
    return "" if old == new else f"{prefix.rstrip('.')}: {_short(old)} -> {_short(new)}"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
