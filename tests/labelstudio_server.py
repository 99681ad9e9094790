"""A fake Label Studio for tests: stdlib http.server on 127.0.0.1, in a thread, answering the routes
`emlc label-studio` uses (token refresh, create project, create a Local Files storage, import tasks), checking the
Authorization header as Label Studio does (`Token T` for a legacy token, `Bearer A` for the access token a
personal access token refreshes to). Every request's method, path, Authorization header and JSON body are recorded
in `server.requests`; `refuse` makes the storage route answer 400 with Label Studio's validation-error shape."""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 2**20
ACCESS = "fake-access-token-0123"


class FakeLabelStudio(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.refuse: str | None = None
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "FakeLabelStudio":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)

    def authorised(self, header: str | None) -> bool:
        return header in (f"Token {self.token}", f"Bearer {ACCESS}")


class _Handler(BaseHTTPRequestHandler):
    server: FakeLabelStudio
    timeout = 30

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._reply(413, {"detail": "too large"})
        body = json.loads(self.rfile.read(length)) if length else None
        path, auth = self.path.split("?", 1)[0], self.headers.get("Authorization")
        self.server.requests.append({"method": "POST", "path": path, "authorization": auth, "body": body})
        if path == "/api/token/refresh":
            ok = body == {"refresh": self.server.token}
            return self._reply(200, {"access": ACCESS}) if ok else self._reply(401, {"detail": "Token is invalid"})
        if not self.server.authorised(auth):
            return self._reply(401, {"detail": "Invalid token."})
        for pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if match:
                return self._reply(*handler(self.server, body, **match.groupdict()))
        self._reply(404, {"detail": f"fake label studio: no route for POST {path}"})

    def _reply(self, status: int, reply: Any) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _project(server: FakeLabelStudio, body: Any) -> tuple[int, Any]:
    return 201, {"id": 7, "title": body["title"]}


def _storage(server: FakeLabelStudio, body: Any) -> tuple[int, Any]:
    if server.refuse:
        return 400, {"id": "x", "status_code": 400, "detail": "Validation error",
                     "validation_errors": {"non_field_errors": [server.refuse]}}
    return 201, {"id": 1, **body}


def _import(server: FakeLabelStudio, body: Any, project: str) -> tuple[int, Any]:
    return 201, {"task_count": len(body), "annotation_count": 0, "prediction_count": len(body)}


ROUTES = [
    (r"/api/projects", _project),
    (r"/api/storages/localfiles", _storage),
    (r"/api/projects/(?P<project>\d+)/import", _import),
]
