"""emlc: clean noisy labels with Enhanced Meta Label Correction.

    import emlc_cli
    run = emlc_cli.clean("images/", "verified.csv", recipe="quick")   # or a datasets.Dataset, a DataFrame, arrays
    run.corrected(), run.probs, run.to_verify, run.summary["label_accuracy"]

`clean`, `evaluate`, `predict` and `load_run` live in emlc_cli.api; they are imported on first use, so that
`import emlc_cli` (and the CLI's argument checks) stay free of torch."""
from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("emlc")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["clean", "evaluate", "predict", "load_run", "Run", "Predictions", "__version__"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from emlc_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'emlc_cli' has no attribute {name!r}")
