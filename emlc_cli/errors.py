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
        self.key, self.detail, self.source = key, message, source


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


class LaunchError(EmlcError):
    """The processes of a torchrun launch cannot reach each other, or do not hold the same inputs."""


class UsageError(EmlcError):
    """A command-line combination that cannot work as given."""


# Secrets (Hub tokens) held in memory: every message emlc prints or logs passes through `redact`.
_SECRETS: set[str] = set()
REDACTED = "***"


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` hides it (in every form: raw, stripped, escaped, quoted)."""
    if not value or not value.strip():
        return
    for form in (value, value.strip()):
        _SECRETS.update(_forms(form))
    _SECRETS.discard("")
    install_log_filter()


def _forms(secret: str) -> set[str]:
    """The ways a secret shows up in text: itself, inside str/bytes reprs, JSON, or percent-encoded."""
    import json
    from urllib.parse import quote

    raw = secret.encode("utf-8", "backslashreplace")
    forms = {secret, repr(secret)[1:-1], repr(raw)[2:-1], json.dumps(secret)[1:-1], quote(secret, safe=""),
             secret.encode("unicode_escape").decode("ascii")}
    return {f for f in forms if len(f.strip()) >= 4}


def redact(text: object) -> str:
    """`text` as a string with every registered secret replaced by ***."""
    out = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in out:
            out = out.replace(secret, REDACTED)
    return out


def has_secret(text: object) -> bool:
    return any(secret in str(text) for secret in _SECRETS)


class RedactingFilter:
    """A logging filter that rewrites each record's message with every secret redacted."""

    def filter(self, record: object) -> bool:
        try:
            message = record.getMessage()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a malformed record: leave it to logging's own error handling
            return True
        if has_secret(message):
            record.msg, record.args = redact(message), ()  # type: ignore[attr-defined]
        exc_info = getattr(record, "exc_info", None)
        if exc_info and exc_info[1] is not None and has_secret(repr(exc_info[1])):
            import logging

            record.exc_text = redact(logging.Formatter().formatException(exc_info))  # type: ignore[attr-defined]
        return True


_FILTER = RedactingFilter()


def install_log_filter() -> None:
    """On the root logger and each of its handlers (a handler filter also sees records from child loggers)."""
    import logging

    root = logging.getLogger()
    for target in (root, *root.handlers):
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
