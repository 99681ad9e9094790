"""`emlc export --format label-studio` writes what the project needs to show the images (storage.json), and
`emlc label-studio DEST` creates the project, its Local Files storage and the tasks through the REST API: against a
loopback fake in CI, and against a real Label Studio where one is installed (EMLC_TEST_LABEL_STUDIO or PATH)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from emlc_cli.export import label_studio as labelstudio, label_studio_project as labelstudio_project
from emlc_cli.cli.app import app
from tests.conftest import TINY, build_noisy_folder
from tests.labelstudio_server import ACCESS, FakeLabelStudio

runner = CliRunner()
TOKEN = "ls-legacy-token-0123456789abcdef"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = build_noisy_folder(tmp_path_factory.mktemp("ls-project"))
    run = folder["tmp"] / "run"
    made = runner.invoke(app, ["clean", str(folder["root"]), "--clean", str(folder["clean"]), "--out", str(run),
                               "--recipe", "quick", "--device", "cpu", "--quiet", *TINY])
    assert made.exit_code == 0, made.output
    written = runner.invoke(app, ["export", str(run), str(folder["tmp"] / "ls"), "--format", "label-studio"])
    assert written.exit_code == 0, written.output
    return {**folder, "run": run, "ls": folder["tmp"] / "ls"}


def test_the_export_names_the_storage_and_its_urls_are_paths_under_the_document_root(exported):
    settings = json.loads((exported["ls"] / labelstudio.STORAGE).read_text())
    root = exported["root"].resolve()
    assert settings["env"] == {"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                               "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root.parent)}
    assert settings["local_files_storage"] == {"path": str(root), "use_blob_urls": False}
    for task in json.loads((exported["ls"] / labelstudio.TASKS).read_text()):
        assert task["data"]["image"] == f"/data/local-files/?d={root.name}/{task['data']['emlc_key']}"


def test_a_document_root_that_does_not_hold_the_data_is_one_line(exported, tmp_path):
    above = runner.invoke(app, ["export", str(exported["run"]), str(tmp_path / "a"), "--format", "label-studio",
                                "--document-root", str(exported["root"].parent.parent)])
    assert above.exit_code == 0, above.output
    tasks = json.loads((tmp_path / "a" / labelstudio.TASKS).read_text())
    assert tasks[0]["data"]["image"].startswith(f"/data/local-files/?d={exported['root'].parent.name}/images/")
    for wrong in (exported["root"], tmp_path):  # the data folder itself (Label Studio refuses it), or beside it
        result = runner.invoke(app, ["export", str(exported["run"]), str(tmp_path / "b"), "--format", "label-studio",
                                     "--document-root", str(wrong)])
        assert result.exit_code == 2 and "--document-root" in result.output and len(result.output.splitlines()) == 1
        assert not (tmp_path / "b").exists()


def test_label_studio_command_creates_project_storage_and_tasks_in_batches(exported, monkeypatch):
    monkeypatch.setattr(labelstudio_project, "IMPORT_BATCH", 50)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    with FakeLabelStudio(TOKEN) as server:
        result = runner.invoke(app, ["label-studio", str(exported["ls"]), "--url", server.url + "/", "--title", "round 1"])
    assert result.exit_code == 0, result.output
    assert f"{server.url}/projects/7/data" in result.output and TOKEN not in result.output
    paths = [r["path"] for r in server.requests]
    assert paths == ["/api/projects", "/api/storages/localfiles"] + ["/api/projects/7/import"] * 3
    assert {r["authorization"] for r in server.requests} == {f"Token {TOKEN}"}
    project, storage, *imports = (r["body"] for r in server.requests)
    assert project == {"title": "round 1", "label_config": (exported["ls"] / labelstudio.CONFIG).read_text()}
    assert storage["project"] == 7 and storage["path"] == str(exported["root"].resolve())
    assert [t for batch in imports for t in batch] == json.loads((exported["ls"] / labelstudio.TASKS).read_text())


def test_a_personal_access_token_is_refreshed_to_a_bearer_token(exported):
    pat = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"
    with FakeLabelStudio(pat) as server:
        result = runner.invoke(app, ["label-studio", str(exported["ls"]), "--url", server.url, "--token", pat])
    assert result.exit_code == 0, result.output
    refresh, *rest = server.requests
    assert refresh["path"] == "/api/token/refresh" and refresh["authorization"] is None and refresh["body"] == {"refresh": pat}
    assert {r["authorization"] for r in rest} == {f"Bearer {ACCESS}"} and pat not in result.output


@pytest.mark.parametrize("case", ["refused", "wrong token", "no token", "unreachable", "url"])
def test_failures_are_one_line_without_the_token(exported, monkeypatch, case):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with FakeLabelStudio(TOKEN) as server:
        server.refuse = f'Absolute local path "{exported["root"]}" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT'
        args = {"refused": ["--token", TOKEN], "wrong token": ["--token", TOKEN + "x"], "no token": [],
                "unreachable": ["--token", TOKEN, "--url", "http://127.0.0.1:9"],
                "url": ["--token", TOKEN, "--url", "localhost:8080"]}[case]
        result = runner.invoke(app, ["label-studio", str(exported["ls"]), "--url", server.url, *args])
    expected = {"refused": "answered 400 to POST /api/storages/localfiles: " + json.dumps({"non_field_errors": [server.refuse]}),
                "wrong token": "answered 401 to POST /api/projects", "no token": "no Label Studio token",
                "unreachable": "cannot reach Label Studio at http://127.0.0.1:9", "url": "--url localhost:8080"}[case]
    assert result.exit_code == 2 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and TOKEN not in result.output


def test_an_export_without_storage_settings_is_one_line(exported, tmp_path):
    written = runner.invoke(app, ["export", str(exported["run"]), str(tmp_path / "p"), "--format", "label-studio",
                                  "--url-prefix", "http://files/"])
    assert written.exit_code == 0 and not (tmp_path / "p" / labelstudio.STORAGE).exists()
    result = runner.invoke(app, ["label-studio", str(tmp_path / "p"), "--token", TOKEN])
    assert result.exit_code == 2 and "no storage.json" in result.output


# ---- a real Label Studio, where installed -------------------------------------------------------------------
def _label_studio() -> str | None:
    return os.environ.get("EMLC_TEST_LABEL_STUDIO") or shutil.which("label-studio")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def real_label_studio(exported, tmp_path):
    """Label Studio on loopback, started with the variables storage.json names; stopped (by its pid) after."""
    binary = _label_studio()
    if binary is None:
        pytest.skip("label-studio is not installed (EMLC_TEST_LABEL_STUDIO=path/to/label-studio to run this)")
    env = {**os.environ, **json.loads((exported["ls"] / labelstudio.STORAGE).read_text())["env"],
           "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls-data")}
    port, token = _free_port(), "0123456789abcdef0123456789abcdef01234567"
    server = subprocess.Popen([binary, "start", "--data-dir", str(tmp_path / "ls-data"), "--internal-host", "127.0.0.1",
                               "-p", str(port), "-b", "--username", "emlc@example.com", "--password", "emlc-test-pass",
                               "--user-token", token, "--enable-legacy-api-token"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(server, url)
        yield {"url": url, "token": token}
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_until_healthy(server: subprocess.Popen, url: str, limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert server.poll() is None, "label-studio exited while starting"
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)  # polling the server's own readiness endpoint, not a timed guess
    pytest.fail(f"label-studio did not answer {url}/health within {limit:.0f} s")


def _get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return reply.status, reply.read()


def test_real_label_studio_shows_the_images_and_its_export_comes_back(exported, real_label_studio, tmp_path):
    url, token = real_label_studio["url"], real_label_studio["token"]
    made = runner.invoke(app, ["label-studio", str(exported["ls"]), "--url", url, "--token", token, "--quiet"])
    assert made.exit_code == 0, made.output
    project = int(made.output.strip().split("/")[-2])
    status, body = _get(f"{url}/api/tasks?project={project}&page_size=200", token)
    listed = json.loads(body)
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    assert status == 200 and len(listed) == 120
    status, image = _get(url + listed[0]["data"]["image"], token)
    assert status == 200 and image == (exported["root"] / listed[0]["data"]["emlc_key"]).read_bytes()
    key = listed[0]["data"]["emlc_key"]
    client = labelstudio_project.Client(url, token)
    client.call("POST", f"/api/tasks/{listed[0]['id']}/annotations/?project={project}",
                {"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["green"]}}]})
    status, body = _get(f"{url}/api/projects/{project}/export?exportType=JSON", token)
    (tmp_path / "export.json").write_bytes(body)
    assert labelstudio.read_decisions(tmp_path / "export.json") == [(key, "green", 1)]
