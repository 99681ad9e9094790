"""A fake Hugging Face Hub for tests: stdlib http.server on 127.0.0.1, in a thread, answering the few routes a
dataset upload uses (create repo, branch, validate-yaml, preupload, tree, revision, commit), and, with `lfs`
set, the legacy LFS batch + PUT upload for .parquet files (as the real Hub stores them).

Commits are kept in memory, decoded: `server.commits[i]["files"][path] -> bytes`. Every request's method,
path and Authorization header are recorded. `on_upload(oid)` is called as each LFS object arrives, before the
reply, so a test can look at the client's side at that moment. Bodies are capped; unknown routes get a 404.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 2**20
REPO = r"/api/datasets/(?P<repo>[^/]+/[^/]+)"


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.commits: list[dict[str, Any]] = []
        self.refuse: str | None = None  # when set, creating a repo answers 403 with this message
        self.lfs = False  # when set, .parquet files are preuploaded as LFS objects
        self.refuse_upload: str | None = None  # when set, LFS uploads answer 403 with this message
        self.blobs: dict[str, bytes] = {}
        self.on_upload: Any = None
        self.gated: set[str] = set()  # model repos whose files answer 401 GatedRepo, token or not
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)

    def files(self, repo: str) -> dict[str, bytes]:
        return self.repos.get(repo, {}).get("files", {})


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub
    timeout = 30

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        body = self._body()
        path = self.path.split("?", 1)[0]
        self.server.requests.append({"method": method, "path": path, "authorization": self.headers.get("Authorization")})
        model = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/.*", path)
        if model and model["repo"] in self.server.gated:
            return self._reply(401, {"error": "Access to this model is restricted."},
                               {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted."})
        for route_method, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                status, reply = handler(self.server, body, **match.groupdict())
                return self._reply(status, reply)
        self._reply(404, {"error": f"fake hub: no route for {method} {path}"}, {"X-Error-Code": "EntryNotFound"})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large for the fake hub")
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, reply: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _create_repo(hub: FakeHub, body: bytes) -> tuple[int, Any]:
    if hub.refuse:
        return 403, {"error": hub.refuse}
    payload = json.loads(body)
    repo = f"{payload.get('organization')}/{payload['name']}"
    hub.repos.setdefault(repo, {"files": {}, "create": payload, "sha": "0" * 40, "branches": ["main"]})
    return 200, {"url": f"{hub.url}/datasets/{repo}", "name": repo}


def _branch(hub: FakeHub, body: bytes, repo: str, branch: str) -> tuple[int, Any]:
    hub.repos[repo]["branches"].append(branch)
    return 200, {}


def _preupload(hub: FakeHub, body: bytes, repo: str, revision: str) -> tuple[int, Any]:
    files = json.loads(body)["files"]
    mode = lambda path: "lfs" if hub.lfs and path.endswith(".parquet") else "regular"  # noqa: E731
    return 200, {"files": [{"path": f["path"], "uploadMode": mode(f["path"]), "shouldIgnore": False} for f in files]}


def _lfs_batch(hub: FakeHub, body: bytes, repo: str) -> tuple[int, Any]:
    objects = json.loads(body)["objects"]
    return 200, {"transfer": "basic", "objects": [
        {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}}
        for o in objects]}


def _lfs_upload(hub: FakeHub, body: bytes, oid: str) -> tuple[int, Any]:
    if hub.refuse_upload:
        return 403, {"error": hub.refuse_upload}
    if hashlib.sha256(body).hexdigest() != oid:
        return 400, {"error": "fake hub: content does not match its oid"}
    hub.blobs[oid] = body
    if hub.on_upload:
        hub.on_upload(oid)
    return 200, {}


def _tree(hub: FakeHub, body: bytes, repo: str, revision: str) -> tuple[int, Any]:
    files = hub.files(repo)
    return 200, [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()} for p, d in sorted(files.items())]


def _revision(hub: FakeHub, body: bytes, repo: str, revision: str) -> tuple[int, Any]:
    if repo not in hub.repos:
        return 404, {"error": "Repository not found"}
    return 200, {"id": repo, "sha": hub.repos[repo]["sha"], "siblings": [{"rfilename": p} for p in hub.files(repo)]}


def _commit(hub: FakeHub, body: bytes, repo: str, revision: str) -> tuple[int, Any]:
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    commit: dict[str, Any] = {"repo": repo, "revision": revision, "files": {}, "deleted": [], "header": {}, "lfs": []}
    for line in lines:
        value = line["value"]
        if line["key"] == "header":
            commit["header"] = value
        elif line["key"] == "file":
            commit["files"][value["path"]] = base64.b64decode(value["content"])
        elif line["key"] == "lfsFile" and value["oid"] in hub.blobs:
            commit["files"][value["path"]] = hub.blobs[value["oid"]]
            commit["lfs"].append(value["path"])
        elif line["key"] in ("deletedFile", "deletedFolder"):
            commit["deleted"].append(value["path"])
        else:
            return 422, {"error": f"fake hub: unsupported commit operation {line['key']}"}
    state = hub.repos[repo]
    for path in commit["deleted"]:
        state["files"].pop(path, None)
    state["files"].update(commit["files"])
    state["sha"] = hashlib.sha1(body).hexdigest()
    hub.commits.append(commit)
    return 200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{state['sha']}", "commitOid": state["sha"], "success": True}


ROUTES = [
    ("POST", r"/api/repos/create", _create_repo),
    ("POST", r"/api/validate-yaml", lambda hub, body: (200, {"errors": [], "warnings": []})),
    ("POST", REPO + r"/branch/(?P<branch>[^/]+)", _branch),
    ("POST", REPO + r"/preupload/(?P<revision>[^/]+)", _preupload),
    ("GET", REPO + r"/tree/(?P<revision>[^/]+)(?:/.*)?", _tree),
    ("GET", REPO + r"/revision/(?P<revision>[^/]+)", _revision),
    ("POST", REPO + r"/commit/(?P<revision>[^/]+)", _commit),
    ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", _lfs_batch),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", _lfs_upload),
]
