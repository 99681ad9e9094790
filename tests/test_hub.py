"""`emlc push` through the real huggingface_hub upload code against a loopback fake Hub (tests/hub_server.py):
what the commit carries, where the token comes from, and that the token never shows anywhere."""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from tests.hub_server import FakeHub
from tests.test_hf_sources import CLASSES, make_sources

pq = pytest.importorskip("pyarrow.parquet")
runner = CliRunner()
TOKEN = "hf_emlcTEST0123456789secretTOKEN"
TINY = ["train.epochs=2", "meta.warmup_epochs=1", "train.batch_size=16", "train.clean_batch_size=8", "model.width=16"]


pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hub")
    sources = make_sources(tmp)
    result = runner.invoke(app, ["clean", str(sources["parquet"]), "--feature-column", "emb", "--clean",
                                 str(sources["clean_ids"]), "--out", str(tmp / "run"), "--device", "cpu", "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    return tmp / "run"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The fake Hub, with huggingface_hub and datasets pointed at it (their endpoints are read at import time)."""
    import datasets
    from huggingface_hub import constants

    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
        monkeypatch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", server.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        yield server


def _corrected(run: Path) -> list[dict[str, str]]:
    with (run / "corrected.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_token_nowhere(token: str, *texts: str, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert token not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path


def test_push_commits_the_shards_and_card_and_never_shows_the_token(hub, feature_run, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/colours-clean", "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert f"{hub.url}/datasets/someone/colours-clean/commit/" in result.output
    authorised = [r for r in hub.requests if r["path"] != "/api/agent-harnesses"]
    assert {r["path"] for r in authorised} >= {"/api/repos/create", "/api/datasets/someone/colours-clean/preupload/main",
                                              "/api/datasets/someone/colours-clean/commit/main"}
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in authorised)
    assert len(hub.commits) == 1
    files = hub.commits[0]["files"]
    assert sorted(files) == ["README.md", "data/train-00000-of-00001.parquet"]
    table = pq.read_table(io.BytesIO(files["data/train-00000-of-00001.parquet"]))
    rows = _corrected(feature_run)
    assert table.num_rows == len(rows)
    assert {"emb", "uid", "image", "label", "original_label", "label_confidence", "label_changed", "label_verified"} <= set(table.column_names)
    assert [CLASSES[v] for v in table.column("label").to_pylist()] == [r["corrected_label"] for r in rows]
    card = files["README.md"].decode()
    summary = json.loads((feature_run / "summary.json").read_text())
    assert f"| rows | {len(rows)} |" in card and f"| labels changed | {summary['changed']} |" in card
    assert f"| verified rows | {summary['verified']} |" in card and "num_examples: 48" in card
    assert "backbone: mlp" in card and "--feature-column emb" in card
    _assert_token_nowhere(TOKEN, result.output, caplog.text, *(d.decode(errors="replace") for d in files.values()),
                          folders=(feature_run, tmp_path))


def test_token_from_hf_token_private_branch_and_stale_shards(hub, feature_run, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.repos["someone/colours-clean"] = {"files": {"data/train-00000-of-00002.parquet": b"old", "notes.txt": b"keep"},
                                          "create": {}, "sha": "1" * 40, "branches": ["main"]}
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/colours-clean", "--private", "--branch", "review"])
    assert result.exit_code == 0, result.output
    create = next(r for r in hub.requests if r["path"] == "/api/repos/create")
    assert create["authorization"] == f"Bearer {TOKEN}"
    assert "review" in hub.repos["someone/colours-clean"]["branches"]
    commit = hub.commits[-1]
    assert commit["revision"] == "review"
    assert commit["deleted"] == ["data/train-00000-of-00002.parquet"]
    assert "notes.txt" in hub.files("someone/colours-clean")
    _assert_token_nowhere(TOKEN, result.output, caplog.text)


def test_private_flag_reaches_the_create_request(hub, feature_run):
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/private-one", "--private", "--token", TOKEN])
    assert result.exit_code == 0, result.output
    created = hub.repos["someone/private-one"]["create"]
    assert created.get("visibility") == "private" or created.get("private") is True
    assert created["type"] == "dataset"


def _three_shards(monkeypatch, run: Path, tmp_path: Path) -> Path:
    """Shards small enough that the run's dataset takes three, and temporary files under a folder the test sees."""
    import tempfile

    from emlc_cli.export import hub as hub_module

    estimate = hub_module.cleaned_dataset(run)[0]._estimate_nbytes()
    monkeypatch.setattr(hub_module, "MAX_SHARD_BYTES", estimate / 2.5)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_push_uploads_shard_by_shard_without_a_full_local_copy(hub, feature_run, monkeypatch, tmp_path):
    scratch = _three_shards(monkeypatch, feature_run, tmp_path)
    hub.lfs = True
    on_disk: list[list[str]] = []  # the shard files on the client's disk as each shard reaches the Hub
    hub.on_upload = lambda oid: on_disk.append(sorted(p.name for p in scratch.rglob("*.parquet")))
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/sharded", "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert on_disk == [[f"train-0000{i}-of-00003.parquet"] for i in range(3)]
    assert list(scratch.iterdir()) == []
    commit = hub.commits[-1]
    assert len(hub.commits) == 1 and commit["lfs"] == [f"data/train-0000{i}-of-00003.parquet" for i in range(3)]
    tables = [pq.read_table(io.BytesIO(commit["files"][name])) for name in commit["lfs"]]
    rows = _corrected(feature_run)
    labels = [CLASSES[v] for t in tables for v in t.column("label").to_pylist()]
    assert labels == [r["corrected_label"] for r in rows]
    card = commit["files"]["README.md"].decode()
    assert f"download_size: {sum(len(commit['files'][name]) for name in commit['lfs'])}" in card


def test_a_refused_shard_upload_is_one_line_and_leaves_no_commit_and_no_files(hub, feature_run, monkeypatch, tmp_path):
    scratch = _three_shards(monkeypatch, feature_run, tmp_path)
    hub.lfs, hub.refuse_upload = True, f"quota exceeded for {TOKEN}"
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/full", "--token", TOKEN])
    assert result.exit_code == 2, result.output
    assert "push to someone/full failed" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert hub.commits == [] and list(scratch.iterdir()) == []
    _assert_token_nowhere(TOKEN, result.output)


def test_hub_errors_are_one_line_and_redact_the_token(hub, feature_run):
    hub.refuse = f"token {TOKEN} may not write here"
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/forbidden", "--token", TOKEN])
    assert result.exit_code == 2
    assert "push to someone/forbidden failed" in result.output and "Traceback" not in result.output
    assert "token *** may not write here" in result.output
    _assert_token_nowhere(TOKEN, result.output)


def test_no_token_is_a_clear_error(hub, feature_run, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    result = runner.invoke(app, ["push", str(feature_run), "--repo", "someone/x"])
    assert result.exit_code == 2 and "no Hugging Face token" in result.output
    assert hub.commits == []


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --repo"),
    (["--repo", "a/b", "--to", "x"], "exactly one of --repo"),
    (["--to", "x", "--token", TOKEN], "apply to --repo only"),
    (["--repo", "not a repo"], "expected owner/name"),
])
def test_push_argument_errors(feature_run, args, message):
    result = runner.invoke(app, ["push", str(feature_run), *args])
    assert result.exit_code == 2 and message in result.output
    assert TOKEN not in result.output


def test_push_to_an_existing_folder_needs_overwrite(feature_run, tmp_path):
    out = tmp_path / "cleaned"
    assert runner.invoke(app, ["push", str(feature_run), "--to", str(out)]).exit_code == 0
    again = runner.invoke(app, ["push", str(feature_run), "--to", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(app, ["push", str(feature_run), "--to", str(out), "--overwrite"]).exit_code == 0


@pytest.mark.parametrize("command", ["push", "export"])
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
