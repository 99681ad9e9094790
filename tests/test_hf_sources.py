"""Hugging Face sources (save_to_disk, parquet, metadata.csv, .npy, Hub) read like the equivalent image folder;
cleaning one, pushing it to a local folder and loading it back with `datasets`."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from emlc_cli.data import huggingface
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.imagefolder import load_image_folder
from emlc_cli.data.kinds import load_source, open_run_images
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import DataError
from tests.conftest import CLASSES, COLOURS, make_image, write_csv

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value  # noqa: E402

runner = CliRunner()
PER_CLASS, VERIFIED, DIM = 16, 4, 8
TINY_IMAGES = ["data.image_size=16", "model.width=8", "train.epochs=2", "meta.warmup_epochs=1", "train.batch_size=16",
               "train.clean_batch_size=8"]
TINY_FEATURES = ["train.epochs=6", "meta.warmup_epochs=2", "train.batch_size=8", "train.clean_batch_size=8", "model.width=32"]


def make_sources(root: Path) -> dict:
    """One noisy colour dataset written as an image folder and as every other source, rows in the same order."""
    rng = np.random.default_rng(1)
    items = []
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            given = CLASSES[(c + 1) % 3] if i >= VERIFIED and rng.random() < 0.25 else name
            embedding = (np.eye(DIM)[c] * 3 + rng.normal(0, 0.4, DIM)).astype(np.float32)
            items.append((f"{given}/{name}_{i:02d}.png", given, name, make_image(COLOURS[name], rng), embedding, i < VERIFIED))
    items.sort(key=lambda item: item[0])
    folder = root / "images"
    for rel, _, _, image, _, _ in items:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / rel)
    features = Features({"image": Image(), "label": ClassLabel(names=CLASSES), "uid": Value("string"),
                         "emb": List(Value("float32"), length=DIM)})
    ds = Dataset.from_dict({"image": [it[3] for it in items], "label": [CLASSES.index(it[1]) for it in items],
                           "uid": [Path(it[0]).stem for it in items], "emb": [it[4] for it in items]}, features=features)
    paths = {"folder": folder, "dataset": ds, "items": items, "tmp": root}
    paths.update(_write_hf_copies(root, ds, items))
    verified = [(i, it) for i, it in enumerate(items) if it[5]]
    paths["clean_paths"] = write_csv(root / "clean_paths.csv", [(it[0], it[2]) for _, it in verified])
    paths["clean_ids"] = write_csv(root / "clean_ids.csv", [(str(i), it[2]) for i, it in verified], ("id", "label"))
    paths["truth_ids"] = write_csv(root / "truth_ids.csv", [(str(i), it[2]) for i, it in enumerate(items)], ("id", "label"))
    return paths


def _write_hf_copies(root: Path, ds: Dataset, items: list) -> dict:
    ds.save_to_disk(str(root / "saved"))
    DatasetDict({"train": ds, "test": ds.select(range(12))}).save_to_disk(str(root / "saved_dict"))
    ds.to_parquet(str(root / "data.parquet"))
    shards = root / "shards"
    shards.mkdir()
    for index in range(2):
        ds.shard(2, index, contiguous=True).to_parquet(str(shards / f"train-{index:05d}-of-00002.parquet"))
    meta = root / "meta"
    meta.mkdir()
    for n, (rel, given, _, image, _, _) in enumerate(items):
        image.save(meta / f"img_{n:03d}.png")
    write_csv(meta / "metadata.csv", [(f"img_{n:03d}.png", it[1]) for n, it in enumerate(items)], ("file_name", "label"))
    np.save(root / "emb.npy", np.stack([it[4] for it in items]))
    write_csv(root / "emb_labels.csv", [(str(i), it[1]) for i, it in enumerate(items)], ("id", "label"))
    return {"saved": root / "saved", "saved_dict": root / "saved_dict", "parquet": root / "data.parquet",
            "shards": shards, "meta": meta, "npy": root / "emb.npy", "npy_labels": root / "emb_labels.csv"}


pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    return make_sources(tmp_path_factory.mktemp("sources"))


def _fingerprints(data, size: int = 16) -> list[tuple[str, str]]:
    images, bad = decode_images(data, size)
    assert not bad
    return [(hashlib.sha1(images[i].numpy().tobytes()).hexdigest(), data.classes[data.labels[i]]) for i in range(len(data))]


@pytest.mark.parametrize("kind", ["saved", "saved_dict", "parquet", "shards", "meta"])
def test_every_source_reads_like_the_image_folder(sources, kind):
    folder = load_image_folder(sources["folder"])
    data = load_source(sources[kind])
    assert data.kind == {"saved": "hf_disk", "saved_dict": "hf_disk", "shards": "parquet", "meta": "metadata_folder"}.get(kind, kind)
    assert data.classes == folder.classes == CLASSES
    assert data.open_image is not None and data.features is None
    if kind == "meta":  # rows are named by metadata.csv's file_name; datasets chooses their order
        assert sorted(data.paths) == [f"img_{n:03d}.png" for n in range(len(folder))]
        order = [data.index_of()[f"img_{n:03d}.png"] for n in range(len(folder))]
        assert [_fingerprints(data)[i] for i in order] == _fingerprints(folder)
    else:
        assert data.paths == [str(i) for i in range(len(folder))]
        assert (data.labels == folder.labels).all()
        assert _fingerprints(data) == _fingerprints(folder)
    assert data.origin["split"] == "train" and data.origin["image_column"] == "image"


def test_feature_column_and_npy_give_the_same_matrix(sources):
    from_parquet = load_source(SourceSpec(str(sources["parquet"]), feature_column="emb"))
    from_npy = load_source(SourceSpec(str(sources["npy"]), labels_csv=str(sources["npy_labels"])))
    expected = np.stack([it[4] for it in sources["items"]])
    for data in (from_parquet, from_npy):
        assert data.features.shape == (len(expected), DIM) and data.features.dtype == np.float32
        np.testing.assert_allclose(data.features, expected)
        assert data.classes == CLASSES and data.open_image is None
        assert decode_images(data, 16)[0].shape == (len(expected), DIM)
    assert (from_parquet.labels == from_npy.labels).all()


def test_id_column_split_and_plain_labels(sources, tmp_path):
    data = load_source(SourceSpec(str(sources["saved_dict"]), split="test", id_column="uid"))
    assert len(data) == 12 and data.paths[0] == Path(sources["items"][0][0]).stem and data.origin["split"] == "test"
    plain = Dataset.from_dict({"x": [[0.0, 1.0]] * 5, "label": [10, 2, 2, 10, 5]})
    plain.to_parquet(str(tmp_path / "plain.parquet"))
    read = load_source(SourceSpec(str(tmp_path / "plain.parquet"), feature_column="x"))
    assert read.classes == ["2", "5", "10"] and read.labels.tolist() == [2, 0, 0, 2, 1]
    assert read.origin["label_values"] == [2, 5, 10] and read.origin["label_type"] == "int"


@pytest.mark.parametrize("spec, message", [
    (dict(label_column="lab"), "no column 'lab' (columns: image, label, uid, emb)"),
    (dict(id_column="nope"), "no column 'nope'"),
    (dict(image_column="uid"), "column 'uid' is not an Image feature"),
    (dict(feature_column="uid"), "column 'uid' must hold fixed-length float vectors"),
    (dict(split="validation"), "split 'validation' not found; splits: train, test"),
])
def test_bad_options_name_the_column_or_split(sources, spec, message):
    location = sources["saved_dict"] if "split" in spec else sources["saved"]
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_source(SourceSpec(str(location), **spec))


def test_bad_rows_are_named(tmp_path):
    Dataset.from_dict({"label": ["a", "b", "a"], "uid": ["x", "y", "x"], "v": [[1.0], [2.0], [3.0]],
                       "w": [[1.0], [2.0], [float("nan")]]}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="id 'x' of column 'uid' appears in rows 0 and 2"):
        load_source(SourceSpec(str(tmp_path / "d"), id_column="uid", feature_column="v"))
    with pytest.raises(DataError, match="row 2 has a NaN"):
        load_source(SourceSpec(str(tmp_path / "d"), feature_column="w"))
    Dataset.from_dict({"label": ["a", None], "v": [[1.0], [2.0]]}).save_to_disk(str(tmp_path / "e"))
    with pytest.raises(DataError, match="column 'label' has no label in row 1"):
        load_source(SourceSpec(str(tmp_path / "e"), feature_column="v"))


def test_hub_source_passes_config_split_and_revision(sources, monkeypatch):
    calls = []

    def fake_load(path, **kwargs):
        calls.append((path, kwargs))
        return sources["dataset"]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(huggingface, "_revision", lambda spec, kind: "abc123" if kind == "hub" else spec.revision)
    monkeypatch.setattr(huggingface, "check_hub_reachable", lambda where: None)  # offline test: no endpoint to reach
    data = load_source(SourceSpec("hf://someone/colours", config="small", split="train", revision="v1"))
    assert calls == [("someone/colours", {"name": "small", "split": "train", "revision": "abc123"})]  # the commit, resolved first
    assert data.kind == "hub" and data.origin["location"] == "hf://someone/colours" and data.origin["revision"] == "abc123"
    assert SourceSpec("hf://someone/colours").run_name() == "colours"


def run_cli(*args: str):
    result = runner.invoke(app, [*args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def image_runs(sources) -> dict:
    tmp = sources["tmp"]
    run_cli("clean", str(sources["folder"]), "--clean", str(sources["clean_paths"]), "--out", str(tmp / "run_folder"),
            "--recipe", "quick", "--device", "cpu", "--quiet", *TINY_IMAGES)
    run_cli("clean", str(sources["saved"]), "--clean", str(sources["clean_ids"]), "--out", str(tmp / "run_saved"),
            "--recipe", "quick", "--device", "cpu", "--quiet", *TINY_IMAGES)
    return {"folder": tmp / "run_folder", "saved": tmp / "run_saved"}


def _corrected(run: Path) -> list[dict[str, str]]:
    with (run / "corrected.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_save_to_disk_cleans_like_the_image_folder(image_runs):
    by_folder, by_saved = _corrected(image_runs["folder"]), _corrected(image_runs["saved"])
    assert [r["path"] for r in by_saved] == [str(i) for i in range(len(by_folder))]
    for key in ("label", "corrected_label", "changed", "split"):
        assert [r[key] for r in by_saved] == [r[key] for r in by_folder], key
    record = json.loads((image_runs["saved"] / "source.json").read_text())
    assert record["kind"] == "hf_disk" and record["label_column"] == "label" and record["image_column"] == "image"
    assert record["command"].startswith("emlc clean ") and "--clean" in record["command"]
    assert open_run_images(image_runs["saved"])("3").size == (16, 16)


def test_push_to_folder_round_trips_through_load_dataset(image_runs, sources, tmp_path):
    out = tmp_path / "cleaned"
    result = run_cli("push", str(image_runs["saved"]), "--to", str(out))
    assert str(out) in result.output
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    loaded = datasets.load_dataset(str(out))["train"]
    assert loaded.column_names == ["image", "uid", "emb", "label", "original_label", "label_confidence",
                                   "label_changed", "label_verified"]
    assert loaded.features["label"] == ClassLabel(names=CLASSES)
    rows = _corrected(image_runs["saved"])
    assert [CLASSES[v] for v in loaded["label"]] == [r["corrected_label"] for r in rows]
    assert [CLASSES[v] for v in loaded["original_label"]] == [r["label"] for r in rows]
    assert list(loaded["label_changed"]) == [r["changed"] == "1" for r in rows]
    assert sum(loaded["label_verified"]) == VERIFIED * 3
    assert loaded[0]["image"].size == (16, 16)
    card = (out / "README.md").read_text()
    summary = json.loads((image_runs["saved"] / "summary.json").read_text())
    assert card.startswith("---\n") and "class_label" in card and "- emlc" in card
    assert f"| rows | {len(rows)} |" in card and f"| labels changed | {summary['changed']} |" in card
    assert "## Change matrix" in card and "backbone: small_cnn" in card and "emlc clean " in card


def test_the_card_gives_the_size_of_the_data_with_its_images(image_runs, tmp_path):
    """An image folder's table holds only paths; the card's dataset_size counts the images the shards embed."""
    import yaml

    out = tmp_path / "cleaned-folder"
    run_cli("push", str(image_runs["folder"]), "--to", str(out))
    meta = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])["dataset_info"]
    loaded = datasets.load_dataset(str(out))["train"]
    assert meta["download_size"] == sum(p.stat().st_size for p in (out / "data").iterdir())
    assert abs(meta["dataset_size"] - loaded.data.nbytes) <= 0.1 * loaded.data.nbytes
    assert meta["dataset_size"] == meta["splits"][0]["num_bytes"] >= 0.5 * meta["download_size"]


def test_evaluate_accepts_dataset_sources(image_runs, sources):
    scored = run_cli("evaluate", str(image_runs["saved"]), "--data", str(sources["saved_dict"]), "--split", "test", "--json")
    assert json.loads(scored.output)["images"] == 12
    truth = run_cli("evaluate", str(image_runs["saved"]), "--truth", str(sources["truth_ids"]), "--json")
    assert json.loads(truth.output)["rows"] == PER_CLASS * 3


def test_export_imagefolder_links_images_under_corrected_classes(image_runs, sources, tmp_path):
    dest = tmp_path / "export"
    run_cli("export", str(image_runs["folder"]), "--format", "imagefolder", str(dest))
    rows = _corrected(image_runs["folder"])
    exported = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png"))
    assert len(exported) == len(rows)
    assert sorted(f"{r['corrected_label']}/{Path(r['path']).name}" for r in rows) == exported
    first = rows[0]
    original = sources["folder"] / first["path"]
    assert (dest / first["corrected_label"] / Path(first["path"]).name).stat().st_ino == original.stat().st_ino
    assert load_image_folder(dest).classes == CLASSES
    refused = runner.invoke(app, ["export", str(image_runs["saved"]), "--format", "imagefolder", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "emlc push RUN --to DIR" in refused.output


def test_feature_column_cleans_with_the_mlp_recipe_and_round_trips(sources, tmp_path):
    run, out = tmp_path / "run", tmp_path / "cleaned"
    run_cli("clean", str(sources["parquet"]), "--feature-column", "emb", "--clean", str(sources["clean_ids"]),
            "--out", str(run), "--device", "cpu", "--quiet", *TINY_FEATURES)
    assert "backbone: mlp" in (run / "recipe.yaml").read_text()
    assert json.loads((run / "student.json").read_text())["in_features"] == DIM
    run_cli("push", str(run), "--to", str(out))
    loaded = datasets.load_dataset(str(out))["train"]
    assert loaded.features["emb"] == List(Value("float32"), length=DIM)
    assert [CLASSES[v] for v in loaded["label"]] == [r["corrected_label"] for r in _corrected(run)]
    scored = run_cli("evaluate", str(run), "--data", str(sources["parquet"]), "--json")
    assert json.loads(scored.output)["accuracy"] > 0.5


def test_wrong_manifest_key_and_backbone_are_reported(sources, tmp_path):
    result = runner.invoke(app, ["clean", str(sources["saved"]), "--clean", str(sources["clean_paths"]), "--dry-run"])
    assert result.exit_code == 2 and "header must contain 'id' and 'label'" in result.output
    result = runner.invoke(app, ["clean", str(sources["parquet"]), "--feature-column", "emb", "--clean",
                                 str(sources["clean_ids"]), "--recipe", "quick", "--dry-run"])
    assert result.exit_code == 2 and "--recipe features" in result.output
    result = runner.invoke(app, ["clean", str(sources["npy"]), "--clean", str(sources["clean_ids"]), "--dry-run"])
    assert result.exit_code == 2 and "needs --labels" in result.output


def test_npy_rows_named_by_their_index_may_come_in_any_order(tmp_path):
    """labels.csv with ids 0..N-1 shuffled labels the array rows those ids name, not the rows in file order."""
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "emb.npy", features)
    order = [3, 0, 5, 1, 4, 2]
    names = ["a", "b", "c", "a", "b", "c"]  # row i's label
    write_csv(tmp_path / "labels.csv", [(str(i), names[i]) for i in order], header=("id", "label"))
    data = load_source(SourceSpec(str(tmp_path / "emb.npy"), labels_csv=str(tmp_path / "labels.csv")))
    assert data.paths == [str(i) for i in range(6)]
    assert [data.classes[c] for c in data.labels] == names
    named = [("x", "a"), ("y", "b"), ("z", "c"), ("w", "a"), ("v", "b"), ("u", "c")]
    write_csv(tmp_path / "named.csv", named, header=("id", "label"))
    in_file_order = load_source(SourceSpec(str(tmp_path / "emb.npy"), labels_csv=str(tmp_path / "named.csv")))
    assert in_file_order.paths == [n for n, _ in named]
