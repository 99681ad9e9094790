"""emlc's version, read from the installed metadata (pyproject.toml writes it once). Modules import it from here,
not from the package face, so that no module imports upward into `emlc_cli/__init__.py`."""
from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("emlc")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
