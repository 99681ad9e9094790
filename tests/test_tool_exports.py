"""Hand-offs to FiftyOne and CVAT: each export in the tool's documented on-disk format, checked field by field
against the run it came from, and (where fiftyone is installed) read back by fiftyone's own importers."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from PIL import Image
from typer.testing import CliRunner

from emlc_cli.run_folder import layout as run_folder
from emlc_cli.cli.app import app
from tests.conftest import TINY, build_noisy_folder

runner = CliRunner()
CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = build_noisy_folder(tmp_path_factory.mktemp("exports"))
    out = folder["tmp"] / "run"
    result = runner.invoke(app, ["clean", str(folder["root"]), "--clean", str(folder["clean"]), "--out", str(out),
                                 "--recipe", "quick", "--device", "cpu", "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    return {"run": out, **folder}


def export(run, dest, fmt, *extra):
    return runner.invoke(app, ["export", str(run), str(dest), "--format", fmt, *extra])


def test_fiftyone_export_holds_given_and_emlc_labels_confidence_and_mistakenness(run):
    dest = run["tmp"] / "fo"
    result = export(run["run"], dest, "fiftyone")
    assert result.exit_code == 0, result.output
    assert "120 FiftyOne samples" in result.output
    metadata = json.loads((dest / "metadata.json").read_text())
    assert "version" not in metadata and metadata["media_type"] == "image"  # fiftyone reads this as the JSON layout
    assert metadata["info"]["classes"] == CLASSES
    samples = json.loads((dest / "samples.json").read_text())["samples"]
    rows = run_folder.read_corrected(run["run"])
    probs = run_folder.read_probs(run["run"])
    to_verify = {r["path"] for r in run_folder.read_to_verify(run["run"])}
    assert [s["emlc_key"] for s in samples] == [r["path"] for r in rows]
    for i, (sample, row) in enumerate(zip(samples, rows)):
        assert sample["filepath"] == str((run["root"] / row["path"]).resolve())
        assert sample["ground_truth"] == {"_cls": "Classification", "label": row["label"]}
        assert sample["emlc"]["_cls"] == "Classification" and sample["emlc"]["label"] == row["corrected_label"]
        assert sample["emlc"]["confidence"] == pytest.approx(float(row["confidence"]))
        assert sample["mistakenness"] == pytest.approx(1 - probs[i, CLASSES.index(row["label"])], abs=1e-5)
        assert ("to_verify" in sample["tags"]) == (row["path"] in to_verify)
        assert ("changed" in sample["tags"]) == (row["changed"] == "1") == sample["changed"]
        assert ("verified" in sample["tags"]) == (row["split"] == "clean")


def test_fiftyone_reads_the_export_with_its_own_importer(run):
    pytest.importorskip("fiftyone", reason="the fiftyone extra is not installed")
    from fiftyone.utils.data.importers import FiftyOneDatasetImporter

    dest = run["tmp"] / "fo-read"
    assert export(run["run"], dest, "fiftyone").exit_code == 0
    importer = FiftyOneDatasetImporter(str(dest))
    assert importer._is_legacy_format_data()  # what from_dir(..., FiftyOneDataset) checks before choosing the reader
    reader = importer._to_legacy_importer()
    reader.setup()
    read = list(reader)
    rows = run_folder.read_corrected(run["run"])
    assert len(read) == len(rows) and reader.get_dataset_info()["classes"] == CLASSES
    assert [s["emlc"].label for s in read] == [r["corrected_label"] for r in rows]
    assert [s["ground_truth"].label for s in read] == [r["label"] for r in rows]
    assert all(0.0 <= s["emlc"].confidence <= 1.0 and 0.0 <= s["mistakenness"] <= 1.0 for s in read)


def test_cvat_export_is_cvat_for_images_1_1_with_one_tag_per_image(run):
    dest = run["tmp"] / "cvat"
    result = export(run["run"], dest, "cvat")
    assert result.exit_code == 0, result.output
    top = ET.parse(dest / "annotations.xml").getroot()
    assert top.tag == "annotations" and top.findtext("version") == "1.1"
    task = top.find("meta/task")
    images = top.findall("image")
    assert task.findtext("mode") == "annotation" and int(task.findtext("size")) == len(images) == 120
    labels = task.findall("labels/label")
    assert [label.findtext("name") for label in labels] == CLASSES
    for label in labels:  # CVAT accepts an attribute on a shape only if its label declares it
        assert label.findtext("type") == "tag"
        assert [a.findtext("name") for a in label.findall("attributes/attribute")] == ["given_label", "confidence", "changed"]
    rows = {r["path"]: r for r in run_folder.read_corrected(run["run"])}
    to_verify = [r["path"] for r in run_folder.read_to_verify(run["run"])]
    assert [image.get("name") for image in images[:len(to_verify)]] == to_verify
    frames = sorted(rows)  # a task made from DATA numbers its frames by name (CVAT's lexicographical sorting)
    assert [int(image.get("id")) for image in images] == [frames.index(image.get("name")) for image in images]
    assert (dest / "frames.txt").read_text().splitlines() == frames
    for image in images:
        row = rows[image.get("name")]
        with Image.open(run["root"] / row["path"]) as opened:
            assert (int(image.get("width")), int(image.get("height"))) == opened.size
        (tag,) = image.findall("tag")
        assert tag.get("label") == row["corrected_label"] and tag.get("source") == "auto"
        values = {a.get("name"): a.text for a in tag.findall("attribute")}
        assert values["given_label"] == row["label"] and float(values["confidence"]) == pytest.approx(float(row["confidence"]), abs=1e-4)
        assert values["changed"] == ("true" if row["changed"] == "1" else "false")


def test_fiftyone_parses_the_cvat_export(run):
    pytest.importorskip("fiftyone", reason="the fiftyone extra is not installed")
    from fiftyone.utils.cvat import load_cvat_image_annotations

    dest = run["tmp"] / "cvat-read"
    assert export(run["run"], dest, "cvat").exit_code == 0
    _, task_labels, images = load_cvat_image_annotations(str(dest / "annotations.xml"))
    rows = {r["path"]: r for r in run_folder.read_corrected(run["run"])}
    assert len(images) == 120 and [label["name"] for label in task_labels.labels] == CLASSES
    for image in images:
        (tag,) = image.tags
        assert tag.label == rows[image.name]["corrected_label"]
        values = {a.name: a.value for a in tag.attributes}
        row = rows[image.name]
        assert values == {"given_label": row["label"], "confidence": pytest.approx(float(row["confidence"]), abs=1e-4),
                          "changed": row["changed"] == "1"}


def test_tool_exports_refuse_runs_without_image_files_and_foreign_options(run, tmp_path):
    import shutil

    features_run = tmp_path / "features-run"
    shutil.copytree(run["run"], features_run)
    record = json.loads((features_run / run_folder.SOURCE).read_text())
    (features_run / run_folder.SOURCE).write_text(json.dumps({**record, "kind": "npy"}))
    for fmt in ("fiftyone", "cvat"):
        result = export(features_run, tmp_path / fmt, fmt)
        assert result.exit_code == 2 and "needs a run on an image folder" in result.output, result.output
        assert not (tmp_path / fmt).exists()
    result = export(run["run"], tmp_path / "x", "cvat", "--url-prefix", "http://h/")
    assert result.exit_code == 2 and "--url-prefix applies to --format label-studio only" in result.output
    assert not (tmp_path / "x").exists()


def test_cvat_export_refuses_a_class_name_xml_cannot_hold(run, tmp_path):
    import shutil

    odd = tmp_path / "odd-run"
    shutil.copytree(run["run"], odd)
    config_path = odd / run_folder.config_file(run_folder.STUDENT)
    config = json.loads(config_path.read_text())
    (config_path).write_text(json.dumps({**config, "classes": ["blue\x01", "green", "red"]}))
    result = export(odd, tmp_path / "cvat", "cvat")
    assert result.exit_code == 2 and "class name 'blue\\x01'" in result.output and "control character" in result.output
    assert not (tmp_path / "cvat").exists()


def test_cvat_labels_json_declares_every_label_and_attribute_the_annotations_carry(run):
    dest = run["tmp"] / "cvat-labels"
    assert export(run["run"], dest, "cvat").exit_code == 0
    spec = json.loads((dest / "labels.json").read_text())
    meta = ET.parse(dest / "annotations.xml").getroot().findall("meta/task/labels/label")
    assert [label["name"] for label in spec] == [label.findtext("name") for label in meta] == CLASSES
    used = {(tag.get("label"), a.get("name")) for tag in ET.parse(dest / "annotations.xml").iter("tag")
            for a in tag.findall("attribute")}
    declared = {(label["name"], a["name"]) for label in spec for a in label["attributes"]}
    assert used <= declared and all(label["type"] == "tag" for label in spec)
    for label in spec:
        given, confidence, changed = label["attributes"]
        assert given == {"name": "given_label", "mutable": False, "input_type": "select", "default_value": "blue",
                         "values": CLASSES}
        assert (confidence["input_type"], confidence["values"]) == ("text", [""])
        assert (changed["input_type"], changed["values"], changed["default_value"]) == ("checkbox", ["false"], "false")


def test_cvat_warns_of_names_it_could_not_match():
    from emlc_cli.export import cvat

    assert cvat.name_warnings(["a/x.png", "a/y.png"], {}) == []
    (twins,) = cvat.name_warnings(["a/x.png", "a/x.jpg", "b/x.png"], {})
    assert "1 image names differ only in the extension (a/x.png, a/x.jpg)" in twins
    (left_out,) = cvat.name_warnings(["a/x.png"], {"skipped": {"a/bad.png": "truncated"}, "ignored_files": 2})
    assert left_out.startswith("3 files under DATA are not in the run")


def test_cvat_sdk_reads_labels_json_as_a_task_request(run):
    """Where cvat-sdk is installed, its own request model for task creation accepts labels.json."""
    models = pytest.importorskip("cvat_sdk.api_client.models", reason="cvat-sdk is not installed")
    dest = run["tmp"] / "cvat-sdk"
    assert export(run["run"], dest, "cvat").exit_code == 0
    spec = json.loads((dest / "labels.json").read_text())
    request = models.TaskWriteRequest(name="emlc", labels=[models.PatchedLabelRequest(**label) for label in spec])
    assert [label.name for label in request.labels] == CLASSES
    assert [a.input_type.value for a in request.labels[0].attributes] == ["select", "text", "checkbox"]
    assert all(type(a).__name__ == "AttributeRequest" for label in request.labels for a in label.attributes)
    with pytest.raises(Exception, match="slider"):  # the model does check: a spec CVAT refuses fails here
        models.PatchedLabelRequest(**{**spec[0], "attributes": [{**spec[0]["attributes"][0], "input_type": "slider"}]})


def test_datumaro_reads_the_cvat_export(run, monkeypatch):
    """Where datumaro is installed, its CVAT importer reads every tag (names resolve under the working folder)."""
    dm = pytest.importorskip("datumaro", reason="datumaro is not installed")

    dest = run["tmp"] / "cvat-datumaro"
    assert export(run["run"], dest, "cvat").exit_code == 0
    monkeypatch.chdir(run["root"])
    dataset = dm.Dataset.import_from(str(dest / "annotations.xml"), "cvat")
    names = [label.name for label in dataset.categories()[dm.AnnotationType.label].items]
    rows = {r["path"]: r for r in run_folder.read_corrected(run["run"])}
    assert len(dataset) == 120 and names == CLASSES
    for item in dataset:
        (tag,) = item.annotations
        row = next(r for path, r in rows.items() if path.rsplit(".", 1)[0] == item.id)
        assert names[tag.label] == row["corrected_label"]
        assert tag.attributes["given_label"] == row["label"] and tag.attributes["changed"] == (row["changed"] == "1")
