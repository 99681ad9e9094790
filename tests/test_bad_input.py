"""Bad input: caught before training, one clear line naming the file/row/key, exit code 2, nothing written."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from emlc_cli.data.manifest import read_path_label_csv
from tests.conftest import TINY

runner = CliRunner()


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _no_data(f):  shutil.rmtree(f["root"])
def _file_data(f):  shutil.rmtree(f["root"]); f["root"].write_text("not a folder")
def _empty_data(f):  shutil.rmtree(f["root"]); f["root"].mkdir()
def _one_class(f):  [shutil.rmtree(f["root"] / c) for c in ("green", "red")]
def _empty_class(f):  (f["root"] / "yellow").mkdir()
def _no_manifest(f):  f["clean"].unlink()
def _bad_header(f):  f["clean"].write_text("file,class\nred/x.png,red\n")
def _empty_manifest(f):  f["clean"].write_text("")
def _header_only(f):  f["clean"].write_text("path,label\n")
def _missing_path(f):  f["clean"].write_text("path,label\nred/nope.png,red\n")
def _outside(f):  f["clean"].write_text("path,label\n../clean.csv,red\n")
def _absolute(f):  f["clean"].write_text(f"path,label\n{f['root'] / 'red' / os.listdir(f['root'] / 'red')[0]},red\n")
def _symlink_out(f):  (f["root"] / "red" / "link.png").symlink_to(f["tmp"] / "clean.csv"); f["clean"].write_text("path,label\nred/link.png,red\n")
def _bad_label(f):  f["clean"].write_text(f"path,label\n{first(f, 'red')},purple\n")
def _conflict(f):  f["clean"].write_text(f"path,label\n{first(f, 'red')},red\n{first(f, 'red')},blue\n")
def _too_few(f):  f["clean"].write_text(f"path,label\n{first(f, 'red')},red\n")
def _latin1(f):  f["clean"].write_bytes("path,label\nred/caf\xe9.png,red\n".encode("latin-1"))
def _short_row(f):  f["clean"].write_text(f"path,label\n{first(f, 'red')}\n")


def first(f: dict, cls: str) -> str:
    return f"{cls}/{sorted(os.listdir(f['root'] / cls))[0]}"


BAD_INPUTS = [
    (_no_data, [], "images: data not found"),
    (_file_data, [], "unsupported data file"),
    (_empty_data, [], "no class folders"),
    (_one_class, [], "only one class"),
    (_empty_class, [], "yellow: class folder holds no images"),
    (_no_manifest, [], "clean.csv: file not found"),
    (_bad_header, [], "header must contain 'path' and 'label'"),
    (_empty_manifest, [], "file is empty"),
    (_header_only, [], "no data rows"),
    (_missing_path, [], "row 2: image 'red/nope.png' not found"),
    (_outside, [], "leads outside the data folder"),
    (_absolute, [], "must be relative to the data folder"),
    (_symlink_out, [], "leads outside the data folder"),
    (_bad_label, [], "row 2: label 'purple' is not a class"),
    (_conflict, [], "row 3: "),
    (_too_few, [], "at least 4 are needed"),
    (_latin1, [], "not UTF-8"),
    (_short_row, [], "row 2: expected 2 fields"),
    (None, ["train.epocs=2"], "train.epocs"),
    (None, ["model.backbone=resnet180"], "did you mean resnet18"),
    (None, ["meta.steps=5"], "divisible by meta.steps=5"),
    (None, ["correct.rule=vote"], "expected one of: argmax, threshold, posterior"),
    (None, ["--device", "cuda"], "no CUDA GPU"),
    (None, ["--device", "tpu"], "expected auto, cpu, cuda or cuda:N"),
    (None, ["--recipe", "nope.yaml"], "nope.yaml"),
]


@pytest.mark.parametrize("breaker, extra, fragment", BAD_INPUTS, ids=[b[2][:30] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_nothing_written(noisy_folder, breaker, extra, fragment):
    if breaker is not None:
        breaker(noisy_folder)
    before = tree_hash(noisy_folder["root"]) if noisy_folder["root"].is_dir() else None
    out = noisy_folder["tmp"] / "run"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--out", str(out),
                                 "--recipe", "quick", "--device", "cpu", "--quiet", *TINY, *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any(fragment in line for line in lines), result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not (noisy_folder["tmp"] / ".run.partial").exists()
    if before is not None:
        assert tree_hash(noisy_folder["root"]) == before


def test_out_inside_data_is_refused(noisy_folder):
    out = noisy_folder["root"] / "runs"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--out", str(out)])
    assert result.exit_code == 2 and "inside the data folder" in result.output
    assert not out.exists()


def test_debug_shows_traceback(noisy_folder, monkeypatch):
    monkeypatch.setenv("EMLC_DEBUG", "1")
    result = runner.invoke(app, ["clean", str(noisy_folder["tmp"] / "nope"), "--clean", str(noisy_folder["clean"])])
    assert result.exit_code != 0 and result.exception is not None


def test_manifest_quirks_are_handled(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes('\ufeffpath,label\r\n"red/a, b.png",red\r\n\r\nblue/c.png,"blue"\r\n'.encode("utf-8"))
    rows = read_path_label_csv(path)
    assert [(p, l) for p, l, _ in rows] == [("red/a, b.png", "red"), ("blue/c.png", "blue")]


def test_class_without_verified_sample_warns(noisy_folder):
    lines = noisy_folder["clean"].read_text().splitlines()
    noisy_folder["clean"].write_text("\n".join(l for l in lines if not l.endswith(",green")) + "\n")
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]),
                                 "--out", str(noisy_folder["tmp"] / "run"), "--recipe", "quick", "--dry-run", *TINY])
    assert result.exit_code == 0, result.output
    assert "class 'green' has no verified sample" in result.output


@pytest.mark.slow
def test_corrupt_and_odd_images(noisy_folder):
    """Corrupt files are skipped and listed (or named with --strict); grey, RGBA, palette and 16-bit images work."""
    from PIL import Image
    import json
    import numpy as np

    root = noisy_folder["root"]
    (root / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "red" / "notes.txt").write_text("not an image")
    Image.new("L", (20, 12), 200).save(root / "red" / "grey.png")
    Image.new("RGBA", (16, 16), (250, 0, 0, 128)).save(root / "red" / "rgba.png")
    Image.new("RGB", (30, 30), (240, 10, 10)).convert("P").save(root / "red" / "palette.png")
    Image.fromarray(np.full((16, 16), 60000, dtype=np.uint16)).save(root / "red" / "deep.png")
    before = tree_hash(root)
    base = ["clean", str(root), "--clean", str(noisy_folder["clean"]), "--recipe", "quick", "--device", "cpu", "--quiet", *TINY]
    strict = runner.invoke(app, [*base, "--out", str(noisy_folder["tmp"] / "strict"), "--strict"])
    assert strict.exit_code == 2 and "broken.png" in strict.output
    done = runner.invoke(app, [*base, "--out", str(noisy_folder["tmp"] / "run")])
    assert done.exit_code == 0, done.output
    summary = json.loads((noisy_folder["tmp"] / "run" / "summary.json").read_text())
    assert list(summary["skipped"]) == ["red/broken.png"] and summary["ignored_files"] == 1
    corrected = (noisy_folder["tmp"] / "run" / "corrected.csv").read_text()
    assert "red/deep.png" in corrected and "red/broken.png" not in corrected
    assert tree_hash(root) == before
