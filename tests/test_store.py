"""The persistent decoded-image store: keyed by what the pixels depend on, reused by later runs, invalidated by
any change to the source, size-capped, self-repairing, and listed / removed by `emlc cache`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY, tiny
from emlc_cli.cli.app import app
from emlc_cli.cache import images as cache_mod
from emlc_cli.cache import store
from emlc_cli.data.imagefolder import load_image_folder

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture
def decodes(monkeypatch):
    """How many images were decoded (not read back from the store) since the test began."""
    count = {"images": 0}
    real = cache_mod.decode_images

    def counting(ds, size, workers=0, rows=None, out=None, **how):
        count["images"] += len(rows if rows is not None else range(len(ds)))
        return real(ds, size, workers, rows, out, **how)

    monkeypatch.setattr(cache_mod, "decode_images", counting)
    return count


def cached(folder, size=16, mode="memory"):
    data = load_image_folder(folder["root"])
    with cache_mod.image_cache(data, size, 1, mode, CPU, folder["tmp"] / "runs" / "x") as (images, bad):
        return images.clone(), bad


def test_a_second_read_maps_the_store_instead_of_decoding(noisy_folder, image_store, decodes):
    first, _ = cached(noisy_folder)
    assert decodes["images"] == 120 and len(store.entries()) == 1
    again, bad = cached(noisy_folder)
    assert decodes["images"] == 120, "the second read decoded again"
    assert torch.equal(first, again) and bad == [] and first.shape == (120, 3, 16, 16) and first.any()
    with Image.open(noisy_folder["root"] / "blue" / "blue_00.png") as image:  # the same pixels decode_images gives
        index = load_image_folder(noisy_folder["root"]).paths.index("blue/blue_00.png")
        assert torch.equal(again[index], torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    (entry,) = store.entries()
    assert entry.path.parent == image_store and entry.info["rows"] == 120 and entry.info["size"] == 16


def test_any_change_to_the_pixels_inputs_makes_a_new_entry(noisy_folder, decodes):
    cached(noisy_folder)
    rel = load_image_folder(noisy_folder["root"]).paths[10]
    one = noisy_folder["root"] / rel
    stat = one.stat()
    Image.new("RGB", (16, 16), (0, 0, 0)).save(one)
    os.utime(one, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed, _ = cached(noisy_folder)
    assert decodes["images"] == 240 and len(store.entries()) == 2
    assert changed[10].max() == 0  # the new pixels, not the stored ones
    Image.new("RGB", (16, 16), (9, 9, 9)).save(noisy_folder["root"] / "red" / "extra.png")
    cached(noisy_folder)
    cached(noisy_folder, size=12)
    assert decodes["images"] == 240 + 121 + 121 and len(store.entries()) == 4


def test_a_saved_dataset_is_keyed_by_its_fingerprint_and_features_are_not_stored(tmp_path, noisy_folder):
    import datasets

    from emlc_cli.data.huggingface import read_dataset
    from emlc_cli.data.spec import SourceSpec

    files = sorted(noisy_folder["root"].glob("*/*.png"))[::10]
    table = datasets.Dataset.from_dict({"image": [str(f) for f in files], "label": [f.parent.name for f in files]})
    table.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "saved"))
    spec = SourceSpec(str(tmp_path / "saved"))
    first, second = (read_dataset(spec, "hf_disk") for _ in range(2))
    assert first.fingerprint and store.key_for(first, 16) == store.key_for(second, 16) != store.key_for(first, 8)
    features = load_image_folder(noisy_folder["root"])
    features.features = np.zeros((len(features), 4), dtype=np.float32)
    assert store.key_for(features, 16) is None


def test_the_cap_evicts_the_least_recently_used_and_a_source_above_it_is_not_kept(noisy_folder, monkeypatch, decodes):
    one_entry = 120 * 3 * 16 * 16
    monkeypatch.setenv("EMLC_CACHE_MAX_GB", str(1.5 * one_entry / 2**30))
    cached(noisy_folder, size=16)
    first = store.entries()[0].key
    cached(noisy_folder, size=15)  # 81,000 bytes more: over the cap, so the 16 px entry goes
    assert [e.info["size"] for e in store.entries()] == [15] and first not in [e.key for e in store.entries()]
    images, _ = cached(noisy_folder, size=32)  # 368,640 bytes: larger than the cap, decoded for this run only
    assert images.shape == (120, 3, 32, 32) and images.any()
    assert [e.info["size"] for e in store.entries()] == [15]


def test_the_cap_covers_decoded_images_and_kept_embeddings_together(noisy_folder, monkeypatch, decodes):
    """EMLC_CACHE_MAX_GB caps both stores at once: whichever entry, images or embeddings, was used least recently
    goes first to make room for the other kind."""
    from emlc_cli.cache import embeddings

    one_entry = 120 * 3 * 16 * 16
    monkeypatch.setenv("EMLC_CACHE_MAX_GB", str(1.5 * one_entry / 2**30))
    cached(noisy_folder, size=16)
    kept = embeddings.save("cd" * 32, np.ones((120, 230), dtype=np.float32), [], {"source": "x", "rows": 120, "dim": 230})
    assert kept is not None and embeddings.entries() and store.entries() == []  # the images were older: they went
    cached(noisy_folder, size=16)  # decoded again (the entry is gone), and kept: the embeddings go in their turn
    assert decodes["images"] == 240 and len(store.entries()) == 1 and embeddings.entries() == []


def test_a_damaged_entry_is_removed_and_decoded_again(noisy_folder, decodes, caplog):
    first, _ = cached(noisy_folder)
    (entry,) = store.entries()
    with open(entry.images, "r+b") as handle:
        handle.truncate(entry.bytes // 2)
    again, _ = cached(noisy_folder)
    assert decodes["images"] == 240 and torch.equal(first, again)
    assert any("damaged or incomplete" in r.getMessage() for r in caplog.records)


def test_staging_left_by_a_killed_run_is_removed_and_a_live_one_kept(noisy_folder, image_store):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    image_store.mkdir(parents=True)
    dead = image_store / f".emlc-cache-{child.pid}-{store.HOST_TAG}-abc_1234"
    live = image_store / f".emlc-cache-{os.getppid()}-{store.HOST_TAG}-abc_1234"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "images.npy").write_bytes(b"partial")
    cached(noisy_folder)
    assert not dead.exists() and live.exists()


def test_the_store_off_or_unwritable_keeps_nothing_and_the_run_goes_on(noisy_folder, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("EMLC_CACHE_DIR", "none")
    images, _ = cached(noisy_folder)
    assert images.shape == (120, 3, 16, 16) and store.root() is None and store.entries() == []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMLC_CACHE_DIR", str(blocker / "cache"))
    images, _ = cached(noisy_folder)
    assert images.any() and any("cannot write the image cache" in r.getMessage() for r in caplog.records)


def test_a_disk_that_fills_while_committing_leaves_no_entry_and_the_run_goes_on(noisy_folder, monkeypatch, image_store,
                                                                                 caplog):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "commit", full)
    images, bad = cached(noisy_folder)
    assert images.shape == (120, 3, 16, 16) and images.any() and bad == []
    assert store.entries() == [] and not [p for p in image_store.iterdir() if p.name.startswith(".")]
    assert any("cannot finish the image cache" in r.getMessage() for r in caplog.records)


def test_a_store_inside_the_data_folder_is_never_written(noisy_folder, monkeypatch, caplog):
    monkeypatch.setenv("EMLC_CACHE_DIR", str(noisy_folder["root"] / ".emlc"))
    before = sorted(p.relative_to(noisy_folder["root"]) for p in noisy_folder["root"].rglob("*"))
    images, _ = cached(noisy_folder)
    assert images.any() and sorted(p.relative_to(noisy_folder["root"]) for p in noisy_folder["root"].rglob("*")) == before
    assert any("inside the data folder" in r.getMessage() for r in caplog.records)


def test_a_next_round_reuses_the_first_rounds_decoding(noisy_folder, decodes):
    base = ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "quick",
            "--device", "cpu", "--quiet", *tiny("train.epochs=4", "meta.warmup_epochs=1")]
    assert runner.invoke(app, [*base, "--out", str(noisy_folder["tmp"] / "r1")]).exit_code == 0
    decisions = noisy_folder["tmp"] / "decisions.csv"
    truth = noisy_folder["truth"].read_text().splitlines()
    decisions.write_text(f"path,label\n{truth[-1]}\n")  # one more verified image, not among the first 18
    result = runner.invoke(app, [*base, "--clean", str(decisions), "--out", str(noisy_folder["tmp"] / "r2")])
    assert result.exit_code == 0, result.output
    assert decodes["images"] == 120
    summary = json.loads((noisy_folder["tmp"] / "r2" / "summary.json").read_text())
    assert summary["verified"] == 19


def test_cache_ls_and_rm(noisy_folder, image_store):
    cached(noisy_folder)
    cached(noisy_folder, size=12)
    listed = runner.invoke(app, ["cache", "ls"])
    assert listed.exit_code == 0 and f"{image_store}: 2 cache(s)" in listed.output
    assert "120 x 12 px" in listed.output and str(noisy_folder["root"].resolve()) in listed.output
    keys = [e.key for e in store.entries()]
    for args, message in ((["cache", "rm", "zz"], "KEY zz: no cache"), (["cache", "rm"], "or --all"),
                          (["cache", "rm", keys[0], "--all"], "give one of them")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    removed = runner.invoke(app, ["cache", "rm", keys[0][:8]])
    assert removed.exit_code == 0 and "removed 1 cache(s)" in removed.output
    assert [e.key for e in store.entries()] == keys[1:]
    assert runner.invoke(app, ["cache", "rm", "--all"]).exit_code == 0 and store.entries() == []
    assert sorted(p.name for p in noisy_folder["root"].rglob("*") if p.is_file()) == sorted(
        p.name for p in noisy_folder["root"].rglob("*.png"))  # the data folder was only read


def test_a_damaged_entry_holding_other_files_is_left_alone(noisy_folder, caplog):
    cached(noisy_folder)
    (entry,) = store.entries()
    (entry.path / "mine.txt").write_text("the user's own file")
    with open(entry.images, "r+b") as handle:
        handle.truncate(entry.bytes // 2)
    again, _ = cached(noisy_folder)  # decoded for this run, the folder not removed: it is not only emlc's
    assert again.any() and (entry.path / "mine.txt").read_text() == "the user's own file"
    store.remove(entry)
    assert (entry.path / "mine.txt").is_file()


def test_a_crop_run_records_its_resize_and_evaluate_decodes_the_same_way(noisy_folder, decodes, monkeypatch):
    from emlc_cli.student import evaluation

    out = noisy_folder["tmp"] / "cropped"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "quick",
                                 "--device", "cpu", "--quiet", "--out", str(out), *tiny("train.epochs=3", "meta.warmup_epochs=1", "data.resize=crop")])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "student.json").read_text())["resize"] == "crop"
    assert [e.info.get("resize") for e in store.entries()] == ["crop"] and decodes["images"] == 120
    asked: list[str] = []
    real = evaluation.decode_images
    monkeypatch.setattr(evaluation, "decode_images", lambda ds, size, **kw: asked.append(kw.get("resize")) or real(ds, size, **kw))
    evaluated = runner.invoke(app, ["evaluate", str(out), "--data", str(noisy_folder["root"]), "--device", "cpu", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert asked == ["crop"]
