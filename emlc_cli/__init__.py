"""emlc: clean noisy labels with Enhanced Meta Label Correction.

    import emlc_cli
    run = emlc_cli.clean("images/", "verified.csv", recipe="quick")   # or a datasets.Dataset, a DataFrame, arrays
    run.corrected(), run.probs, run.to_verify, run.summary["label_accuracy"]

The public names are importable from here: `clean`, `evaluate`, `predict`, `load_run`, `Run`, `Predictions`, the
recipe (`Recipe`, `load_recipe`), the progress events (`StepReport`, `EpochReport`, `FoldReport`) and the errors
(`EmlcError` and its subclasses). The stage modules behind them are imported on first use, so that
`import emlc_cli` (and the CLI's argument checks) stay free of torch."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from emlc_cli._version import __version__
from emlc_cli.errors import DataError, DeviceError, EmlcError, Interrupted, OutputError, RecipeError, TrainingError

_LAZY = {  # name -> the module that defines it, imported on first use
    "clean": "api", "evaluate": "api", "predict": "api", "load_run": "api", "Run": "api", "Predictions": "api",
    "Recipe": "recipe.schema", "load_recipe": "recipe.schema",
    "StepReport": "train.events", "EpochReport": "train.events", "FoldReport": "train.events",
}
__all__ = [*_LAZY, "EmlcError", "DataError", "RecipeError", "OutputError", "DeviceError", "TrainingError",
           "Interrupted", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"emlc_cli.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'emlc_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
