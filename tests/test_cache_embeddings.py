"""`emlc cache ls` lists the kept embeddings beside the decoded images, and `emlc cache rm` removes them."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from emlc_cli.cache import embeddings
from emlc_cli.cli.app import app

runner = CliRunner()
KEY = "ab" * 32


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    """A store of this test's own: the session's holds other tests' entries."""
    monkeypatch.setenv("EMLC_CACHE_DIR", str(tmp_path / "store"))


def kept_entry() -> embeddings.Entry:
    info = {"source": "/data/photos", "rows": 3, "dim": 4, "encoder": {"backbone": "local-dir:/models/lite0"}}
    entry = embeddings.save(KEY, np.ones((3, 4), dtype=np.float32), [], info)
    assert entry is not None
    return entry


def test_cache_ls_lists_kept_embeddings_and_rm_removes_one_by_its_key():
    entry = kept_entry()
    listed = runner.invoke(app, ["cache", "ls"])
    assert listed.exit_code == 0, listed.output
    assert "1 embedding(s)" in listed.output and KEY[:12] in listed.output
    assert "3 x 4-d" in listed.output and "local-dir:/models/lite0" in listed.output and "/data/photos" in listed.output
    removed = runner.invoke(app, ["cache", "rm", KEY[:8]])
    assert removed.exit_code == 0 and "removed 1 cache(s)" in removed.output, removed.output
    assert not entry.path.exists() and embeddings.entries() == []


def test_cache_rm_all_removes_embeddings_but_never_a_folder_holding_other_files():
    entry = kept_entry()
    (entry.path / "notes.txt").write_text("the user's own")
    removed = runner.invoke(app, ["cache", "rm", "--all"])
    assert removed.exit_code == 0, removed.output
    assert (entry.path / "notes.txt").read_text() == "the user's own" and (entry.path / embeddings.EMBEDDINGS).exists()
    (entry.path / "notes.txt").unlink()
    assert runner.invoke(app, ["cache", "rm", "--all"]).exit_code == 0 and not entry.path.exists()
