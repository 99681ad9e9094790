"""One exception family. The CLI maps every EmlcError to one stderr line and exit code 2."""
from __future__ import annotations


class EmlcError(Exception):
    """Base of every error a user can cause and fix."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def one_line(self) -> str:
        return " ".join(self.message.split())


class RecipeError(EmlcError):
    """A recipe key is unknown, mistyped or out of range."""

    def __init__(self, message: str, key: str | None = None, source: str | None = None) -> None:
        where = ", ".join(part for part in (source, f"key '{key}'" if key else None) if part)
        super().__init__(f"recipe {where}: {message}" if where else f"recipe: {message}")
        self.key = key


class DataError(EmlcError):
    """The dataset, a manifest or a row of it cannot be used."""

    def __init__(self, message: str, path: object | None = None, row: int | None = None) -> None:
        where = str(path) if path is not None else ""
        if row is not None:
            where = f"{where}, row {row}" if where else f"row {row}"
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.row = row


class OutputError(EmlcError):
    """The output folder cannot be written as asked."""


class DeviceError(EmlcError):
    """The requested device is unavailable or ran out of memory."""


class TrainingError(EmlcError):
    """Training diverged (NaN/Inf) or otherwise cannot continue."""


class Interrupted(EmlcError):
    """Ctrl-C or SIGTERM: the training state was saved; --resume continues."""

    exit_code = 130


class UsageError(EmlcError):
    """A command-line combination that cannot work as given."""
