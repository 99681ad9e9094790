"""Hostile inputs on the hand-off surfaces (issue 30): a Label Studio JSON export read back as `--clean`, the tool
exports of a tampered run folder, and the files `review`, `predict` and `recipes copy` write by name. Each is one
line naming the file and where in it, exit 2, nothing written, nothing outside the output touched."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.cli.app import app
from tests.test_hostile_inputs import assert_refused, in_thread, needs_fifo
from tests.test_review import fake_run, make_folder

runner = CliRunner()
DEEP = "[" * 100_000  # json.loads raises RecursionError on this, not JSONDecodeError
FORMATS = ("label-studio", "fiftyone", "cvat", "imagefolder")


@pytest.fixture
def image_run(tmp_path: Path) -> dict:
    """A run folder of an image folder without training (review's fake_run, plus the student's class list)."""
    root = tmp_path / "images"
    rows, _ = make_folder(root, per_class=4)
    run = fake_run(tmp_path, [(p, g, g if i % 3 else "green", 0.9) for i, (p, g) in enumerate(rows)], root=root)
    classes = json.loads((run / run_folder.SOURCE).read_text())["classes"]
    (run / run_folder.config_file(run_folder.STUDENT)).write_text(json.dumps({"classes": classes}))
    return {"run": run, "root": root, "tmp": tmp_path, "rows": rows}


# --- a Label Studio JSON export read back as --clean ---------------------------------------------------------

def _task(key: str, result: object) -> dict:
    return {"data": {"emlc_key": key}, "annotations": [{"result": result}]}


@pytest.mark.parametrize("annotations, fragments", [
    ([{"result": [{"type": "choices", "value": "red"}]}], ("annotation 1, result 1: 'value' is a str, not an object",)),
    ([{"result": {"type": "choices"}}], ("annotation 1: 'result' is a dict, not a list",)),
    ([{"result": 7}], ("annotation 1: 'result' is a int, not a list",)),
    ([{"result": [["choices"]]}], ("annotation 1, result 1 is a list, not an object",)),
    ([{"result": [{"type": "choices", "value": {"choices": ["red"]}}, None]}], ("annotation 1, result 2 is null",)),
    (5, ("'annotations' is a int, not a list",)),
    (["done"], ("annotation 1 is a str, not an object",)),
], ids=["value_str", "result_dict", "result_int", "region_list", "region_null", "annotations_int", "annotation_str"])
def test_a_label_studio_export_of_the_wrong_shape_is_one_line(image_run, annotations, fragments):
    exported = image_run["tmp"] / "project-export.json"
    key = image_run["rows"][0][0]
    exported.write_text(json.dumps([{"data": {"emlc_key": key}, "annotations": annotations}]))
    result = runner.invoke(app, ["clean", str(image_run["root"]), "--clean", str(exported), "--dry-run"])
    assert_refused(result, "project-export.json, row 1", *fragments)


def test_a_label_studio_export_nested_100k_deep_is_one_line(image_run):
    exported = image_run["tmp"] / "deep.json"
    exported.write_text(DEEP)
    result = runner.invoke(app, ["clean", str(image_run["root"]), "--clean", str(exported), "--dry-run"])
    assert_refused(result, "deep.json", "not a Label Studio JSON export", "nested too deeply")


@pytest.mark.parametrize("name", [run_folder.SOURCE, run_folder.config_file(run_folder.STUDENT)])
def test_a_run_json_nested_100k_deep_is_one_line(image_run, name):
    (image_run["run"] / name).write_text(DEEP)
    dest = image_run["tmp"] / "ls"
    result = runner.invoke(app, ["export", str(image_run["run"]), str(dest), "--format", "label-studio"])
    assert_refused(result, name, "nested too deeply")
    assert not dest.exists()


# --- exports of a tampered corrected.csv ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", ["../../../../etc/hostname", "/etc/hostname"], ids=["dotdot", "absolute"])
def test_an_export_never_points_outside_the_data_folder(image_run, fmt, path):
    corrected = image_run["run"] / run_folder.CORRECTED
    lines = corrected.read_text().splitlines()
    lines[1] = ",".join([path, *lines[1].split(",")[1:]])
    corrected.write_text("\n".join(lines) + "\n")
    dest = image_run["tmp"] / "out"
    result = runner.invoke(app, ["export", str(image_run["run"]), str(dest), "--format", fmt])
    assert_refused(result, "corrected.csv, row 2", path)
    assert not dest.exists() and not any(p.name.startswith(".out") for p in image_run["tmp"].iterdir())


# --- files written by name: never over a FIFO, a device, a symlink --------------------------------------------

@needs_fifo
@pytest.mark.parametrize("option", ["--out", "--png"])
def test_review_never_replaces_a_fifo(image_run, option):
    fifo = image_run["tmp"] / "report.out"
    os.mkfifo(fifo)
    result = in_thread(lambda: runner.invoke(app, ["review", str(image_run["run"]), option, str(fifo)]))
    assert_refused(result, option, "report.out is a FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("option", ["--out", "--png"])
def test_review_never_replaces_a_symlink(image_run, option):
    link = image_run["tmp"] / "link.html"
    link.symlink_to(image_run["tmp"] / "elsewhere.html")  # dangling: nothing there for the ownership check to read
    result = runner.invoke(app, ["review", str(image_run["run"]), option, str(link)])
    assert_refused(result, option, "link.html is a symbolic link")
    assert link.is_symlink() and not (image_run["tmp"] / "elsewhere.html").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root (as root the hole was real)")
def test_review_never_replaces_a_device(image_run):
    node = image_run["tmp"] / "null"  # a /dev/null of our own: the real one is never put at risk
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    result = runner.invoke(app, ["review", str(image_run["run"]), "--out", str(node)])
    assert_refused(result, "--out", "null is a device")
    assert stat.S_ISCHR(node.lstat().st_mode)


def test_predict_out_never_replaces_a_symlink_even_to_its_own_file(tmp_path):
    from emlc_cli.cli.predict import HEADER

    mine = tmp_path / "preds.csv"
    mine.write_text(",".join(HEADER) + "\n")
    link = tmp_path / "link.csv"
    link.symlink_to(mine)
    run = tmp_path / "run"
    run.mkdir()
    result = runner.invoke(app, ["predict", str(run), str(tmp_path / "data"), "--out", str(link), "--overwrite"])
    assert_refused(result, "--out", "link.csv is a symbolic link")
    assert link.is_symlink() and mine.read_text() == ",".join(HEADER) + "\n"


def test_recipes_copy_never_writes_through_a_dangling_symlink(tmp_path):
    link = tmp_path / "mine.yaml"
    link.symlink_to(tmp_path / "elsewhere.yaml")
    result = runner.invoke(app, ["recipes", "copy", "quick", str(link)])
    assert_refused(result, "mine.yaml already exists")
    assert not (tmp_path / "elsewhere.yaml").exists()
