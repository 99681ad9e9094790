"""`--stream`: parquet data and Hub datasets read through datasets' streaming, in two passes that each read only
their columns, with no Arrow copy; the same ids, labels and pixels as the whole-table read; ranges of rows read
from the source shard that holds them; the decoded images kept in the store like any other source."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from emlc_cli.data import huggingface
from emlc_cli.cache import store
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.kinds import load_source
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import DataError
from tests.test_hf_sources import TINY_IMAGES, make_sources

datasets = pytest.importorskip("datasets")
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    found = make_sources(tmp_path_factory.mktemp("stream"))
    three = found["tmp"] / "three"
    three.mkdir()
    for index in range(3):  # 16 rows per shard
        found["dataset"].shard(3, index, contiguous=True).to_parquet(str(three / f"train-{index:05d}-of-00003.parquet"))
    found["three"] = three
    return found


def _arrow_files() -> list[Path]:
    return list(Path(datasets.config.HF_DATASETS_CACHE).rglob("*.arrow"))


@pytest.mark.parametrize("kind", ["parquet", "three"])
def test_a_streamed_source_reads_like_the_whole_table_and_writes_no_arrow_copy(sources, kind):
    before = set(_arrow_files())
    streamed = load_source(SourceSpec(str(sources[kind]), streaming=True))
    pixels, bad = decode_images(streamed, 16)
    assert bad == [] and set(_arrow_files()) == before
    whole = load_source(SourceSpec(str(sources[kind])))
    assert (streamed.kind, streamed.paths, streamed.classes) == (whole.kind, whole.paths, whole.classes)
    assert streamed.labels.tolist() == whole.labels.tolist()
    assert torch.equal(pixels, decode_images(whole, 16)[0])
    assert streamed.origin["streaming"] is True and streamed.fingerprint


class _CountingShards:
    """The reader's stream, recording which source shards are opened."""

    def __init__(self, stream) -> None:
        self.stream, self.opened = stream, []
        self.num_shards = stream.num_shards

    def shard(self, num_shards: int, index: int):
        self.opened.append(index)
        return self.stream.shard(num_shards=num_shards, index=index)


def test_a_range_of_rows_is_read_from_the_shard_that_holds_it(sources):
    streamed = load_source(SourceSpec(str(sources["three"]), streaming=True))
    whole = decode_images(load_source(SourceSpec(str(sources["three"]))), 16)[0]
    reader = streamed.read_blobs.__self__
    reader.stream = _CountingShards(reader.stream)
    late, _ = decode_images(streamed, 16, rows=range(36, 48))  # what the last of several processes reads
    assert reader.stream.opened == [2] and torch.equal(late, whole[36:48])
    middle, _ = decode_images(streamed, 16, rows=range(20, 40))  # starts over, inside shard 1, runs into shard 2
    assert reader.stream.opened == [2, 1, 2] and torch.equal(middle, whole[20:40])


def test_a_streamed_feature_column_and_its_ids(sources):
    streamed = load_source(SourceSpec(str(sources["three"]), feature_column="emb", id_column="uid", streaming=True))
    whole = load_source(SourceSpec(str(sources["three"]), feature_column="emb", id_column="uid"))
    assert streamed.paths == whole.paths and streamed.labels.tolist() == whole.labels.tolist()
    assert (streamed.features == whole.features).all() and streamed.read_blobs is None
    with pytest.raises(DataError, match="no column 'nope'"):
        load_source(SourceSpec(str(sources["three"]), id_column="nope", streaming=True))


def test_a_hub_dataset_is_streamed_at_its_resolved_commit_reading_only_the_columns_of_each_pass(sources, monkeypatch):
    calls = []
    real = datasets.load_dataset
    files = [str(p) for p in sorted(sources["three"].glob("*.parquet"))]

    def fake_load(path, **kwargs):  # the Hub's parquet files, served from disk
        calls.append((path, kwargs))
        return real("parquet", data_files={"train": files}, split="train", streaming=True, columns=kwargs.get("columns"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(huggingface, "_revision", lambda spec, kind: "a" * 40)
    monkeypatch.setattr(huggingface, "check_hub_reachable", lambda where: None)  # offline test: no endpoint to reach
    data = load_source(SourceSpec("hf://someone/colours", split="train", streaming=True))
    assert {path for path, _ in calls} == {"someone/colours"}
    assert all(kw["streaming"] is True and kw["revision"] == "a" * 40 for _, kw in calls)
    assert [kw.get("columns") for _, kw in calls] == [None, ["label"], ["image"]]
    assert data.kind == "hub" and data.origin["revision"] == "a" * 40 and data.fingerprint == "stream-hub-" + "a" * 40
    assert len(data) == 48 and decode_images(data, 16)[1] == []


def test_clean_streams_keeps_the_decoded_images_and_a_changed_file_makes_a_new_entry(sources, image_store):
    base = ["clean", str(sources["three"]), "--stream", "--clean", str(sources["clean_ids"]), "--recipe", "quick",
            "--device", "cpu", "--quiet", *TINY_IMAGES]
    first = runner.invoke(app, [*base, "--out", str(sources["tmp"] / "s1")])
    assert first.exit_code == 0, first.output
    record = json.loads((sources["tmp"] / "s1" / "source.json").read_text())
    assert record["streaming"] is True and record["kind"] == "parquet" and "--stream" in record["command"]
    assert len((sources["tmp"] / "s1" / "corrected.csv").read_text().splitlines()) == 49
    assert runner.invoke(app, [*base, "--out", str(sources["tmp"] / "s2")]).exit_code == 0
    assert len(store.entries()) == 1  # the second run read the first one's decoding
    shard = next(sources["three"].glob("*.parquet"))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert runner.invoke(app, [*base, "--out", str(sources["tmp"] / "s3")]).exit_code == 0
    assert len(store.entries()) == 2


def test_stream_is_refused_for_sources_it_cannot_stream(sources):
    result = runner.invoke(app, ["clean", str(sources["folder"]), "--stream", "--clean", str(sources["clean_paths"]),
                                 "--dry-run"])
    assert result.exit_code == 2 and "--stream reads hf:// datasets and parquet data" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_streamed_run_is_pushed_and_reviewed_from_its_source(sources):
    from emlc_cli.data.kinds import open_run_images

    run = sources["tmp"] / "for_push"
    cleaned = runner.invoke(app, ["clean", str(sources["three"]), "--stream", "--clean", str(sources["clean_ids"]), "--recipe",
                                  "quick", "--device", "cpu", "--quiet", "--out", str(run), *TINY_IMAGES])
    assert cleaned.exit_code == 0, cleaned.output
    pushed = runner.invoke(app, ["push", str(run), "--to", str(sources["tmp"] / "pushed")])
    assert pushed.exit_code == 0, pushed.output
    table = datasets.load_dataset(str(sources["tmp"] / "pushed"), split="train")
    assert len(table) == 48 and table.features["label"].names == load_source(SourceSpec(str(sources["three"]))).classes
    opened = open_run_images(run)
    with opened("47") as image:  # a review opens images in any order
        assert image.size == (16, 16)


def test_two_processes_stream_their_own_rows_into_one_entry(sources, tmp_path):
    """Under --nproc 2 each process reads the shards of its half of the rows; the entry is the whole-table decode."""
    import subprocess
    import sys

    import numpy as np

    from tests.test_distributed import worker_env

    where = tmp_path / "store"
    done = subprocess.run([sys.executable, "-m", "emlc_cli", "clean", str(sources["three"]), "--stream", "--clean",
                           str(sources["clean_ids"]), "--recipe", "quick", "--device", "cpu", "-q", "--nproc", "2",
                           "--out", str(tmp_path / "two"), *TINY_IMAGES],
                          env=worker_env(EMLC_CACHE_DIR=str(where)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (entry,) = list((where / "images").glob("*/images.npy"))
    whole = decode_images(load_source(SourceSpec(str(sources["three"]))), 16)[0].numpy()
    assert np.array_equal(np.load(entry), whole)


def test_a_broken_or_changed_shard_is_one_error_naming_the_source(sources, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(sources["three"], folder)
    data = load_source(SourceSpec(str(folder), streaming=True))
    last = sorted(folder.glob("*.parquet"))[-1]
    sources["dataset"].select(range(4)).to_parquet(str(last))  # 16 rows became 4 after the first pass
    with pytest.raises(DataError, match="the stream ended at row 36 of 48"):
        decode_images(data, 16)
    last.write_bytes(last.read_bytes()[:100])
    for streamed in (["--stream"], []):  # datasets' own log line of the error is not printed beside emlc's
        result = runner.invoke(app, ["clean", str(folder), *streamed, "--clean", str(sources["clean_ids"]), "--dry-run"])
        assert result.exit_code == 2 and str(folder) in result.output and "ArrowInvalid" in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
