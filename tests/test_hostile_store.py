"""Hostile inputs on the image store (issue 30): entries whose metadata or pixels are not what emlc wrote, and the
cache's environment variables. A damaged entry is a stale cache: `cache ls` lists it as invalid, a run warns,
decodes again and replaces it; a bad variable is one line naming it, exit 2."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from emlc_cli.cache import store
from emlc_cli.errors import UsageError
from tests.conftest import tiny
from tests.test_hostile_inputs import assert_refused, in_thread, needs_fifo
from tests.test_store import cached

runner = CliRunner()


def cli(*args: str) -> Any:
    return in_thread(lambda: runner.invoke(app, list(args)), timeout=60)


def one_entry(folder: dict) -> store.Entry:
    """The store's entry for the folder at 16 px, decoded now."""
    cached(folder)
    (entry,) = store.entries()
    return entry


def run_clean(folder: dict, *extra: str) -> Any:
    return cli("clean", str(folder["root"]), "--clean", str(folder["clean"]), "--out", str(folder["tmp"] / "run"),
               "--recipe", "quick", "--device", "cpu", "--quiet", *tiny("train.epochs=3", "meta.warmup_epochs=1"), *extra)


def _deep_info(entry: store.Entry) -> None:
    (entry.path / store.INFO).write_text("[" * 100_000 + "]" * 100_000)


def _rows_as_list(entry: store.Entry) -> None:
    _edit_info(entry, rows=[1, 2])


def _shape_of_other_rows(entry: store.Entry) -> None:
    _edit_info(entry, shape=[121, 3, 16, 16])


def _edit_info(entry: store.Entry, **changes: Any) -> None:
    info = json.loads((entry.path / store.INFO).read_text())
    (entry.path / store.INFO).write_text(json.dumps({**info, **changes}))


def _unreadable(rows: Any) -> Callable[[store.Entry], None]:
    return lambda entry: (entry.path / store.UNREADABLE).write_text(json.dumps(rows))


def _pixels_changed(entry: store.Entry) -> None:
    with open(entry.images, "r+b") as handle:  # the same size, one pixel different: only the digest sees it
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 0xFF]))


DAMAGE: dict[str, tuple[Callable[[store.Entry], None], str]] = {
    "info.json nested 100k deep": (_deep_info, "info.json: cannot be read (nested too deeply)"),
    "rows given as a list": (_rows_as_list, "info.json: key 'rows' must be a whole number"),
    "a shape that is not its rows": (_shape_of_other_rows, "info.json: key 'shape' must be [rows, 3, size, size]"),
    "unreadable row 999999": (_unreadable([[999999, "x"]]), "unreadable.json: [999999, 'x'] is not a [row, reason]"),
    "unreadable row -1": (_unreadable([[-1, "x"]]), "unreadable.json: [-1, 'x'] is not a [row, reason]"),
    "unreadable row twice": (_unreadable([[3, "x"], [3, "y"]]), "unreadable.json: [3, 'y'] is not"),
    "unreadable as an object": (_unreadable({"3": "x"}), "unreadable.json: not a JSON list"),
    "one pixel changed": (_pixels_changed, "images.npy: its SHA-256 differs from the one recorded"),
}
LISTED = ("info.json nested 100k deep", "rows given as a list", "unreadable row 999999", "unreadable row -1")


@pytest.mark.parametrize("case", LISTED)
def test_cache_ls_lists_a_damaged_entry_as_invalid(noisy_folder, case):
    damage, problem = DAMAGE[case]
    entry = one_entry(noisy_folder)
    damage(entry)
    listed = cli("cache", "ls")
    assert listed.exit_code == 0 and "Traceback" not in listed.output, listed.output
    assert f"{entry.key[:12]}" in listed.output and f"invalid: {problem}" in listed.output
    removed = cli("cache", "rm", "--all")
    assert removed.exit_code == 0 and "removed 1 cache(s)" in removed.output and not entry.path.exists()


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_entry_is_decoded_again_and_replaced(noisy_folder, case, caplog):
    damage, problem = DAMAGE[case]
    first, _ = cached(noisy_folder)
    (entry,) = store.entries()
    damage(entry)
    again, bad = cached(noisy_folder)
    assert torch.equal(first, again) and bad == []  # no readable image skipped, no row invented
    assert any("damaged or incomplete" in r.getMessage() and problem in r.getMessage() for r in caplog.records)
    (rebuilt,) = store.entries()
    assert rebuilt.key == entry.key and not rebuilt.problem and rebuilt.unreadable == []


def test_a_run_on_a_damaged_entry_trains_on_every_image_and_leaves_no_partial(noisy_folder):
    entry = one_entry(noisy_folder)
    _unreadable([[999999, "x"], [-1, "y"]])(entry)
    result = run_clean(noisy_folder)
    assert result.exit_code == 0, result.output
    summary = json.loads((noisy_folder["tmp"] / "run" / "summary.json").read_text())
    assert summary["skipped"] == {} and summary["images"] == 120
    assert sorted(p.name for p in noisy_folder["tmp"].iterdir() if p.name.startswith(".")) == []


@needs_fifo
def test_a_fifo_or_link_for_an_entrys_metadata_is_never_opened(noisy_folder, tmp_path):
    entry = one_entry(noisy_folder)
    (entry.path / store.INFO).unlink()
    os.mkfifo(entry.path / store.INFO)
    (entry.path / store.UNREADABLE).unlink()
    os.symlink("/dev/zero", entry.path / store.UNREADABLE)
    listed = cli("cache", "ls")
    assert listed.exit_code == 0 and "invalid: info.json: cannot be read (not a regular file)" in listed.output
    images, _ = in_thread(lambda: cached(noisy_folder))  # decoded for this run; the folder holds no user file
    assert images.any() and store.entries()[0].problem == ""


@needs_fifo
def test_a_fifo_for_an_entrys_pixels_is_never_opened(noisy_folder):
    first = one_entry(noisy_folder)
    first.images.unlink()
    os.mkfifo(first.images)
    listed = cli("cache", "ls")
    assert listed.exit_code == 0 and "invalid: images.npy: missing, or not a regular file" in listed.output
    images, _ = in_thread(lambda: cached(noisy_folder))
    assert images.any() and store.entries()[0].images.is_file()


def test_an_entry_linked_from_elsewhere_is_never_read_or_removed(noisy_folder, image_store, tmp_path, caplog):
    entry = one_entry(noisy_folder)
    elsewhere = tmp_path / "elsewhere"
    entry.path.rename(elsewhere)  # an intact entry, but outside the store: the link at its key is not followed
    os.symlink(elsewhere, entry.path)
    before = sorted((p.name, p.stat().st_size) for p in elsewhere.iterdir())
    images, _ = in_thread(lambda: cached(noisy_folder))
    assert images.any() and entry.path.is_symlink() and store.entries() == []
    assert sorted((p.name, p.stat().st_size) for p in elsewhere.iterdir()) == before
    assert any("not a folder" in r.getMessage() for r in caplog.records)


def test_an_entry_from_before_the_digest_is_still_used(noisy_folder, monkeypatch):
    entry = one_entry(noisy_folder)
    info = json.loads((entry.path / store.INFO).read_text())
    assert len(info.pop("sha256")) == 64
    (entry.path / store.INFO).write_text(json.dumps(info))
    decoded = []
    monkeypatch.setattr("emlc_cli.cache.images.decode_images", lambda *a, **k: decoded.append(1))
    images, _ = cached(noisy_folder)
    assert images.any() and decoded == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "-1", "abc", "5 GB"])
def test_a_bad_cache_cap_is_one_line(noisy_folder, monkeypatch, value):
    monkeypatch.setenv("EMLC_CACHE_MAX_GB", value)
    for result in (cli("cache", "ls"), run_clean(noisy_folder, "--dry-run")):
        assert_refused(result, f"EMLC_CACHE_MAX_GB={value!r}", "a number from 0")
    with pytest.raises(UsageError, match="EMLC_CACHE_MAX_GB"):
        cached(noisy_folder)
    assert not (noisy_folder["tmp"] / "run").exists()


@pytest.mark.parametrize("value, gigabytes", [("", "50.0"), ("  ", "50.0"), ("0", "0.0"), ("2.5", "2.5"), (" 7 ", "7.0")])
def test_a_cache_cap_that_is_a_number_or_unset_is_taken(monkeypatch, value, gigabytes):
    monkeypatch.setenv("EMLC_CACHE_MAX_GB", value)
    listed = cli("cache", "ls")
    assert listed.exit_code == 0 and f"of {gigabytes} GB (EMLC_CACHE_MAX_GB)" in listed.output


def test_entries_outside_the_store_stay_out_of_reach(noisy_folder, image_store, tmp_path):
    """A link in the store named like an entry is neither listed nor removed, nor is what it points to."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / store.INFO).write_text("{}")
    one_entry(noisy_folder)
    os.symlink(elsewhere, image_store / ("0" * 64))
    assert cli("cache", "rm", "--all").exit_code == 0
    assert (elsewhere / store.INFO).read_text() == "{}" and Path(image_store / ("0" * 64)).is_symlink()
