"""A Label Studio project from an `emlc export RUN DEST --format label-studio` folder, through Label Studio's REST
API (https://api.labelstud.io): the project with DEST/label_config.xml, its Local Files storage (DEST/storage.json:
Label Studio serves an image under LOCAL_FILES_DOCUMENT_ROOT only when a storage of the project holds it), and the
tasks of DEST/tasks.json imported in batches. Standard library only; the token is never printed or written."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from emlc_cli.jsonfile import read_json_file
from emlc_cli.errors import DataError, EmlcError, redact, register_secret
from emlc_cli.export.label_studio import CONFIG, STORAGE, TASKS

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
IMPORT_BATCH = 1000  # tasks per import request: a 100k-image export is 100 requests, none of them huge
MAX_REPLY = 1 << 20  # bytes of a reply read; every reply the client uses is a small JSON object


class LabelStudioError(EmlcError):
    """Label Studio refused or could not be reached; the message never holds the token."""


@dataclass
class Project:
    id: int
    url: str  # the project's page
    tasks: int
    storage: str  # the Local Files storage's folder


@dataclass
class Export:
    """A label-studio export folder, read and checked once."""
    label_config: str
    tasks: list[dict[str, Any]]
    storage_path: str
    document_root: str


def read_export(folder: Path) -> Export:
    """DEST of `emlc export --format label-studio` (local-files URLs: storage.json present)."""
    folder = Path(folder)
    if not (folder / STORAGE).is_file():
        raise DataError(f"no {STORAGE}: export again without --url-prefix (local-files URLs need a Local Files "
                        "storage), or import tasks.json by hand for a --url-prefix export", path=folder)
    settings = _json(folder / STORAGE, dict)
    storage, env = settings.get("local_files_storage"), settings.get("env")
    if not isinstance(storage, dict) or not isinstance(storage.get("path"), str) or not isinstance(env, dict) \
            or not isinstance(env.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"), str):
        raise DataError("expected local_files_storage.path and env.LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", path=folder / STORAGE)
    tasks = _json(folder / TASKS, list)
    config = (folder / CONFIG).read_text(encoding="utf-8") if (folder / CONFIG).is_file() else None
    if not config:
        raise DataError("file not found or empty", path=folder / CONFIG)
    return Export(config, tasks, storage["path"], env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"])


def _json(path: Path, kind: type) -> Any:
    if not path.is_file():
        raise DataError("file not found", path=path)
    loaded = read_json_file(path, "not JSON")
    if not isinstance(loaded, kind):
        raise DataError(f"expected a JSON {'object' if kind is dict else 'list'}", path=path)
    return loaded


def create_project(export: Export, url: str, token: str, title: str) -> Project:
    """The project, its Local Files storage and every task, in that order (the storage before the tasks, so the
    images load as soon as the tasks are there)."""
    client = Client(url, token)
    created = client.call("POST", "/api/projects", {"title": title, "label_config": export.label_config})
    project = _id(created, "/api/projects")
    client.call("POST", "/api/storages/localfiles", {"project": project, "path": export.storage_path,
                                                     "title": "emlc images", "use_blob_urls": False})
    for start in range(0, len(export.tasks), IMPORT_BATCH):
        client.call("POST", f"/api/projects/{project}/import", export.tasks[start:start + IMPORT_BATCH])
    return Project(project, f"{client.base}/projects/{project}/data", len(export.tasks), export.storage_path)


def _id(reply: Any, path: str) -> int:
    if not isinstance(reply, dict) or not isinstance(reply.get("id"), int):
        raise LabelStudioError(f"Label Studio's answer to POST {path} has no project id")
    return reply["id"]


def resolve_token(given: Optional[str], environ: dict[str, str]) -> str:
    """--token, else LABEL_STUDIO_API_KEY; surrounding whitespace stripped, and redacted from every message."""
    raw = given if given is not None else environ.get(TOKEN_ENV)
    register_secret(raw)
    if not raw or not raw.strip():
        raise LabelStudioError(f"no Label Studio token: set {TOKEN_ENV} (Account & Settings > Access Token) or pass --token")
    return raw.strip()


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise LabelStudioError(f"--url {url}: expected Label Studio's address, e.g. http://localhost:8080")
    return url.strip().rstrip("/")


class Client:
    """JSON over HTTP with the token: a legacy API token as `Token T`; a personal access token (a JWT refresh
    token) is exchanged once at /api/token/refresh for an access token sent as `Bearer A`."""

    def __init__(self, url: str, token: str, timeout: float = 120.0) -> None:
        self.base, self.timeout = check_url(url), timeout
        self._auth = f"Token {token}"
        if token.count(".") == 2:  # a JWT: Label Studio's personal access tokens
            access = self.call("POST", "/api/token/refresh", {"refresh": token}, auth=False)
            if not isinstance(access, dict) or not isinstance(access.get("access"), str):
                raise LabelStudioError("Label Studio's answer to POST /api/token/refresh has no access token")
            register_secret(access["access"])
            self._auth = f"Bearer {access['access']}"

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        request = urllib.request.Request(self.base + path, method=method, data=json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        if auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                text = reply.read(MAX_REPLY)
        except urllib.error.HTTPError as err:
            raise LabelStudioError(f"Label Studio answered {err.code} to {method} {path}: {_detail(err)}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise LabelStudioError(redact(f"cannot reach Label Studio at {self.base} ({reason})")) from None
        try:
            return json.loads(text) if text.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LabelStudioError(f"Label Studio's answer to {method} {path} is not JSON") from None


def _detail(err: urllib.error.HTTPError) -> str:
    """The server's own words (its JSON `detail` / validation errors), short and without the token."""
    try:
        body = err.read(4096).decode("utf-8", "replace")
    except OSError:
        body = ""
    try:
        parsed = json.loads(body)
        body = json.dumps(parsed.get("validation_errors") or parsed.get("detail") or parsed) if isinstance(parsed, dict) else body
    except json.JSONDecodeError:
        pass
    return redact(" ".join(body.split())[:300] or err.reason)
