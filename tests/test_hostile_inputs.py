"""Hostile inputs (issue 12): FIFOs, alias bombs, decompression bombs, parser gaps, symlink loops, stale caches,
an unreachable Hub and a tampered run folder. Each is one line naming the culprit, exit 2, nothing written."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import socket
import stat
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from emlc_cli.cache import images as cache_mod
from emlc_cli.data.columns import encode_labels
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.imagefolder import load_image_folder
from emlc_cli.data.kinds import load_source
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.manifest import read_path_label_csv
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import DataError, RecipeError
from emlc_cli.recipe.schema import load_recipe
from tests.conftest import TINY, write_csv

runner = CliRunner()
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


def tree_hash(root: Path) -> str:
    """Names, kinds and bytes of every entry (FIFOs are hashed by name, never opened; links are not followed)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            digest.update(f"{path.relative_to(root)}:{stat.S_IFMT(mode)}".encode())
            if stat.S_ISREG(mode):
                digest.update(path.read_bytes())
    return digest.hexdigest()


def in_thread(fn: Callable[[], Any], timeout: float = 60) -> Any:
    """fn() in a daemon thread; a hang fails the test instead of the suite."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s (hung)"
    return box.get("value")


def clean(f: dict, *extra: str, clean_csv: Path | None = None) -> Any:
    args = ["clean", str(f["root"]), "--clean", str(clean_csv or f["clean"]), "--out", str(f["tmp"] / "run"),
            "--recipe", "quick", "--device", "cpu", "--quiet", "--dry-run", *TINY, *extra]
    return in_thread(lambda: runner.invoke(app, args))


def assert_refused(result: Any, *fragments: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and all(part in lines[0] for part in fragments), result.output
    assert "Traceback" not in result.output


def first(f: dict, cls: str) -> str:
    return f"{cls}/{sorted(os.listdir(f['root'] / cls))[0]}"


# --- 1. hangs and memory blow-ups ---------------------------------------------------------------------------

@needs_fifo
def test_fifo_in_class_folder_is_never_opened(noisy_folder):
    root = noisy_folder["root"]
    os.mkfifo(root / "red" / "img.jpg")
    before = tree_hash(root)
    data = load_image_folder(root)
    assert "red/img.jpg" not in data.paths and data.ignored_files == 1
    hostile = LabeledImages(root, ["red/img.jpg", data.paths[0]], np.array([0, 1]), data.classes)
    _, bad = in_thread(lambda: decode_images(hostile, 16, workers=1))
    assert bad == [(0, "OSError: not a regular file")]
    assert clean(noisy_folder).exit_code == 0
    assert tree_hash(root) == before


@needs_fifo
@pytest.mark.parametrize("option", ["--clean", "--labels"])
def test_fifo_named_in_a_manifest_is_refused(noisy_folder, option):
    root = noisy_folder["root"]
    os.mkfifo(root / "red" / "img.jpg")
    manifest = noisy_folder["clean"]
    manifest.write_text(manifest.read_text() + "red/img.jpg,red\n")
    before = tree_hash(root)
    extra = ["--labels", str(manifest)] if option == "--labels" else []
    assert_refused(clean(noisy_folder, *extra), "clean.csv", "red/img.jpg", "is not a regular file")
    assert tree_hash(root) == before


def alias_bomb(where: str) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    return {"description": "description: *i\n", "value": "train:\n  epochs: *i\n"}[where] + "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["description", "value"])
def test_recipe_alias_bomb_is_refused_before_expanding(noisy_folder, where):
    recipe = noisy_folder["tmp"] / "bomb.yaml"
    recipe.write_text(alias_bomb(where))
    assert recipe.stat().st_size < 1024
    result = clean(noisy_folder, "--recipe", str(recipe))
    assert_refused(result, "bomb.yaml", "anchors and aliases")
    assert not (noisy_folder["tmp"] / "run").exists()


def test_recipe_over_one_mib_is_refused(tmp_path):
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("description: x\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(RecipeError, match=r"huge.yaml: larger than 1 MiB"):
        load_recipe(str(recipe))


def png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height pixels (valid CRC, no pixel data to speak of)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_decompression_bomb_is_skipped_and_warnings_stay_quiet(noisy_folder, monkeypatch):
    root = noisy_folder["root"]
    (root / "red" / "bomb.png").write_bytes(png_claiming(30000, 30000))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # a 20 x 20 image now only warns
    Image.new("RGB", (20, 20), (250, 0, 0)).save(root / "red" / "large.png")
    data = load_image_folder(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cache_mod.image_cache(data, 16, 1, "memory", __import__("torch").device("cpu"), noisy_folder["tmp"]) as (_, bad):
            pass
    assert [(data.paths[i], reason.split(":")[0]) for i, reason in bad] == [("red/bomb.png", "DecompressionBombError")]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def fake_student_run(run: Path, classes: list[str], size: int = 16) -> Path:
    """A run folder holding only what `emlc evaluate --data` reads: the student's weights and config."""
    import json

    from safetensors.torch import save_file

    from emlc_cli.models.build import build_classifier

    run.mkdir()
    model = build_classifier("small_cnn", len(classes), 8, True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "student.safetensors"))
    config = {"architecture": "small_cnn", "num_classes": len(classes), "width": 8, "small_stem": True,
              "input_size": size, "classes": classes}
    (run / "student.json").write_text(json.dumps(config))
    return run


def test_evaluate_data_skips_a_decompression_bomb(noisy_folder):
    import json

    root = noisy_folder["root"]
    (root / "red" / "bomb.png").write_bytes(png_claiming(30000, 30000))
    run = fake_student_run(noisy_folder["tmp"] / "run", sorted(os.listdir(root)))
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(root), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["unreadable"] == 1 and scores["images"] == 120


# --- 2. parser gaps ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, overrides, fragment", [
    ("train: 5\n", ["train.epochs=3"], "key 'train': expected a mapping of keys, got int (5)"),
    ("train: []\n", [], "key 'train': expected a mapping of keys, got list"),
    ("meta: 0\n", [], "key 'meta': expected a mapping of keys, got int (0)"),
    ("train:\n  epochs: 3\n  epochs: 4\n", [], "line 3, column 3: key 'epochs' appears twice"),
    ("train:\n", ["train.epochs=" + "[" * 5000 + "]" * 5000], "key 'train.epochs': override value: nested deeper"),
    ("train:\n", ["train.epochs=3", " train.epochs=4"], "key 'train.epochs': override given twice"),
    ("train:\n", ["a" + ".a" * 5000 + "=1"], "unknown section"),
    ("description: " + "[" * 5000 + "\n", [], "nested deeper than"),
], ids=["scalar_section_override", "list_section", "zero_section", "duplicate_yaml_key", "deep_override_value",
        "duplicate_override", "deep_override_key", "deep_yaml_value"])
def test_recipe_shapes_are_named(tmp_path, text, overrides, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path), overrides)
    message = info.value.one_line()
    assert fragment in message and len(message) < 400, message


def test_empty_section_still_means_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\nmeta:\n")
    assert load_recipe(str(path), ["train.epochs=4"]).train.epochs == 4


def test_duplicate_override_on_the_command_line_is_one_line(noisy_folder):
    assert_refused(clean(noisy_folder, "train.epochs=3", "train.epochs=5"), "train.epochs", "given twice")


def test_overlong_manifest_field_names_file_and_row(noisy_folder):
    manifest = noisy_folder["clean"]
    manifest.write_text(manifest.read_text() + '"' + "x" * (200 * 1024) + '",red\n')
    assert_refused(clean(noisy_folder), "clean.csv, row 20", "field larger than field limit")


def test_blank_lines_before_the_header_are_skipped(tmp_path):
    path = write_csv(tmp_path / "m.csv", [("red/a.png", "red")])
    path.write_text("\n \n" + path.read_text())
    assert [(p, l) for p, l, _ in read_path_label_csv(path)] == [("red/a.png", "red")]


def test_dot_slash_paths_match_in_labels_and_clean(noisy_folder):
    f = noisy_folder
    rows = [line.split(",") for line in f["truth"].read_text().splitlines()[1:]]
    labels = write_csv(f["tmp"] / "labels.csv", [(f"./{p}", l) for p, l in rows])
    clean_rows = [line.split(",") for line in f["clean"].read_text().splitlines()[1:]]
    dotted = write_csv(f["tmp"] / "dotted.csv", [(f"./{p.replace('/', '//')}", l) for p, l in clean_rows])
    for manifest, extra in ((f["clean"], ["--labels", str(labels)]), (dotted, [])):
        result = clean(f, *extra, clean_csv=manifest)
        assert result.exit_code == 0 and "18 verified" in result.output, result.output


@pytest.mark.parametrize("path, fragment", [("red/../../clean.csv", "leads outside the data folder"),
                                             ("/etc/passwd", "must be relative to the data folder")])
def test_labels_paths_may_not_escape(noisy_folder, path, fragment):
    labels = write_csv(noisy_folder["tmp"] / "labels.csv", [(first(noisy_folder, "red"), "red"), (path, "blue")])
    assert_refused(clean(noisy_folder, "--labels", str(labels)), "labels.csv, row 3", fragment)


def test_class_folder_with_trailing_space_is_verified(noisy_folder):
    root = noisy_folder["root"]
    (root / "red").rename(root / "red ")
    text = noisy_folder["clean"].read_text().replace("red/", "red /").replace(",red\n", ",red \n")
    noisy_folder["clean"].write_text(text)
    result = clean(noisy_folder)
    assert result.exit_code == 0 and "18 verified" in result.output, result.output


def test_classlabel_value_beyond_the_names_is_refused():
    from datasets import ClassLabel

    with pytest.raises(DataError, match=r"column 'label', row 1: label 7 is not a class \(the ClassLabel has 4 names"):
        encode_labels([0, 7, 1], "label", ClassLabel(names=["a", "b", "c", "d"]), "data.parquet")


def test_parquet_claiming_a_classlabel_it_breaks_is_refused(tmp_path, isolated_datasets_cache):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"label": {"_type": "ClassLabel", "names": ["a", "b", "c", "d"]}, "v": {"_type": "List", "feature": {"dtype": "float32", "_type": "Value"}}}
    table = pa.table({"label": pa.array([0, 7, 1], pa.int64()), "v": [[1.0], [2.0], [3.0]]})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d.parquet: column 'label', row 1: label 7 is not a class"):
        load_source(SourceSpec(str(tmp_path / "d.parquet"), feature_column="v"))


# --- 3. symlinks, stale caches, an unreachable Hub ----------------------------------------------------------

def test_symlinked_class_folder_back_into_data_is_skipped_once(noisy_folder, caplog, tmp_path):
    root = noisy_folder["root"]
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "again").symlink_to(root / "red", target_is_directory=True)
    (root / "red" / "up").symlink_to(root, target_is_directory=True)  # a cycle inside a class folder
    outside = tmp_path / "elsewhere" / "yellow"
    outside.mkdir(parents=True)
    Image.new("RGB", (16, 16), (250, 250, 0)).save(outside / "y.png")
    (root / "yellow").symlink_to(outside, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="emlc_cli.data.imagefolder"):
        data = in_thread(lambda: load_image_folder(root))
    assert data.classes == ["blue", "green", "red", "yellow"] and len(data) == 121
    warned = [r.getMessage() for r in caplog.records if "symlinked" in r.getMessage()]
    assert len(warned) == 1 and "again, loop" in warned[0]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_mmap_caches_of_dead_runs_are_removed(tmp_path):
    tag, dead, alive = cache_mod.HOST_TAG, dead_pid(), os.getppid()
    names = {"stale": f".emlc-cache-{dead}-{tag}-abc_1234", "alive": f".emlc-cache-{alive}-{tag}-abc_1234",
             "other_host": f".emlc-cache-{dead}-{'0' * 8 if tag != '0' * 8 else '1' * 8}-abc_1234",
             "old_style": ".emlc-cache-abc_1234", "extra_file": f".emlc-cache-{dead}-{tag}-xyz_9876",
             "not_ours": f"emlc-cache-{dead}-{tag}-abc_1234"}
    for key, name in names.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "images.npy").write_bytes(b"x")
    (tmp_path / names["extra_file"] / "notes.txt").write_text("someone else's")
    removed = cache_mod.remove_stale_caches(tmp_path)
    assert [p.name for p in removed] == [names["stale"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "stale")


def test_mmap_cache_folder_carries_the_pid(noisy_folder, monkeypatch):
    import torch

    monkeypatch.setenv("EMLC_CACHE_DIR", "none")  # the run-only mmap file, used when the persistent store is off
    data = load_image_folder(noisy_folder["root"])
    near = noisy_folder["tmp"] / "runs" / "x"
    with cache_mod.image_cache(data, 16, 1, "mmap", torch.device("cpu"), near) as (images, _):
        folders = [p.name for p in noisy_folder["tmp"].iterdir() if p.name.startswith(".emlc-cache-")]
        assert len(folders) == 1 and cache_mod.CACHE_NAME.fullmatch(folders[0])
        assert folders[0].startswith(f".emlc-cache-{os.getpid()}-") and images.shape == (120, 3, 16, 16)
    assert not [p for p in noisy_folder["tmp"].iterdir() if p.name.startswith(".emlc-cache-")]


@pytest.fixture
def refused_port():
    """A loopback port bound but not listening: every connection is refused at once, deterministically."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_unreachable_hub_fails_fast_in_one_line(noisy_folder, refused_port, monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{refused_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    clean_ids = write_csv(noisy_folder["tmp"] / "ids.csv", [("0", "red")], ("id", "label"))
    result = in_thread(lambda: runner.invoke(app, ["clean", "hf://someone/colours", "--clean", str(clean_ids),
                                                   "--dry-run", "--quiet", "--out", str(noisy_folder["tmp"] / "run")]))
    assert_refused(result, "hf://someone/colours", f"cannot reach the Hugging Face Hub at http://127.0.0.1:{refused_port}")
    assert "Retry" not in result.output


# --- 4. a tampered run folder --------------------------------------------------------------------------------

@pytest.mark.parametrize("content, fragments", [
    ("a,b\n1,2\n", ("corrected.csv", "column", "path")),
    ("path,label,corrected_label,confidence,changed,split\nred/red_00.png,red\n", ("corrected.csv, row 2",)),
    ("", ("corrected.csv: has no rows",)),
], ids=["no_columns", "short_row", "empty"])
def test_tampered_corrected_csv_is_one_line(noisy_folder, content, fragments):
    run = noisy_folder["tmp"] / "run"
    run.mkdir()
    (run / "corrected.csv").write_text(content)
    result = runner.invoke(app, ["evaluate", str(run), "--truth", str(noisy_folder["truth"])])
    assert_refused(result, *fragments)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_pickled_weights_are_refused_never_run(noisy_folder, suffix):
    marker = noisy_folder["tmp"] / "pwned"
    weights = noisy_folder["tmp"] / f"evil{suffix}"
    weights.write_bytes(pickle.dumps({"body.0.weight": _Payload(marker)}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = clean(noisy_folder, f"model.weights={weights}")
    assert_refused(result, f"evil{suffix}", "model.weights", "refused")
    assert not marker.exists() and not caught


def test_weights_that_do_not_fit_are_one_line(noisy_folder):
    import torch

    weights = noisy_folder["tmp"] / "other.pt"
    torch.save({"body.0.weight": torch.zeros(2, 2)}, weights)
    assert clean(noisy_folder, f"model.weights={weights}").exit_code == 0  # tensors only: accepted when read
    from emlc_cli.models.build import build_backbone

    with pytest.raises(RecipeError, match=r"other.pt: does not fit the network"):
        build_backbone("small_cnn", 8, True, str(weights))


def test_review_shows_a_fifo_as_a_placeholder_instead_of_hanging(tmp_path):
    import threading

    from tests.test_review import fake_run, make_folder

    root = tmp_path / "images"
    rows, _ = make_folder(root, per_class=4)
    victim = root / rows[0][0]
    victim.unlink()
    os.mkfifo(victim)
    run = fake_run(tmp_path, [(p, g, g if i else "green", 0.9) for i, (p, g) in enumerate(rows)], root=root)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(r=runner.invoke(app, ["review", str(run), "--out", str(tmp_path / "r.html")])),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "emlc review blocked on a FIFO"
    assert result["r"].exit_code == 0, result["r"].output
    assert (tmp_path / "r.html").is_file()
