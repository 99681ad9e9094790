"""Label Studio hand-off: tasks in its documented JSON format, and its export read back as a verified set."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from emlc_cli.cli.app import app
from tests.conftest import TINY

runner = CliRunner()


def check_task_format(task: dict, choices: set[str], from_name: str, to_name: str) -> None:
    """Label Studio's basic JSON task format with pre-annotations (labelstud.io/guide/predictions,
    /guide/task_format): a `data` object whose keys the config references as $key, and a list of `predictions`,
    each with `model_version` (str), `score` (number) and a `result` list of regions {from_name, to_name, type,
    value}; a `choices` region's value is {"choices": [one of the config's Choice values]}."""
    assert set(task) == {"data", "predictions"} and isinstance(task["data"], dict)
    assert isinstance(task["data"]["image"], str) and task["data"]["image"]
    for prediction in task["predictions"]:
        assert isinstance(prediction["model_version"], str) and isinstance(prediction["score"], float)
        assert 0.0 <= prediction["score"] <= 1.0
        for region in prediction["result"]:
            assert set(region) == {"from_name", "to_name", "type", "value"}
            assert (region["from_name"], region["to_name"], region["type"]) == (from_name, to_name, "choices")
            assert len(region["value"]["choices"]) == 1 and region["value"]["choices"][0] in choices


@pytest.fixture
def run(noisy_folder):
    out = noisy_folder["tmp"] / "run"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--out", str(out),
                                 "--recipe", "quick", "--device", "cpu", "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_export_writes_tasks_in_label_studio_format_with_to_verify_first(run, noisy_folder):
    dest = noisy_folder["tmp"] / "ls"
    result = runner.invoke(app, ["export", str(run), str(dest), "--format", "label-studio"])
    assert result.exit_code == 0, result.output
    config = ET.fromstring((dest / "label_config.xml").read_text())
    image, control = config.find("Image"), config.find("Choices")
    choices = {c.get("value") for c in control.findall("Choice")}
    assert image.get("value") == "$image" and control.get("toName") == image.get("name")
    assert choices == {"blue", "green", "red"} and control.get("choice") == "single"
    tasks = json.loads((dest / "tasks.json").read_text())
    assert len(tasks) == 120
    for task in tasks:
        check_task_format(task, choices, control.get("name"), image.get("name"))
    to_verify = [line.split(",")[0] for line in (run / "to_verify.csv").read_text().splitlines()[1:]]
    assert [t["data"]["emlc_key"] for t in tasks[:len(to_verify)]] == to_verify
    first = tasks[0]["data"]
    assert first["image"].startswith("/data/local-files/?d=") and first["image"].endswith(first["emlc_key"].split("/")[-1])
    served = runner.invoke(app, ["export", str(run), str(noisy_folder["tmp"] / "ls2"), "--format", "label-studio",
                                 "--url-prefix", "http://localhost:8081/"])
    assert served.exit_code == 0
    assert json.loads((noisy_folder["tmp"] / "ls2" / "tasks.json").read_text())[0]["data"]["image"].startswith("http://localhost:8081/")


def test_a_label_studio_export_is_a_verified_set(run, noisy_folder):
    dest = noisy_folder["tmp"] / "ls"
    assert runner.invoke(app, ["export", str(run), str(dest), "--format", "label-studio"]).exit_code == 0
    tasks = json.loads((dest / "tasks.json").read_text())
    truth = dict(line.split(",") for line in noisy_folder["truth"].read_text().splitlines()[1:])
    for i, task in enumerate(tasks[:20]):  # what a Label Studio export looks like after 20 reviews, one cancelled
        label = truth[task["data"]["emlc_key"]]
        task["annotations"] = [{"was_cancelled": i == 3, "result": [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]}]
        task["id"] = i + 1
    exported = noisy_folder["tmp"] / "project-1-export.json"
    exported.write_text(json.dumps(tasks))
    out = noisy_folder["tmp"] / "round2"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(exported), "--out", str(out),
                                 "--recipe", "quick", "--device", "cpu", "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verified"] == 19
    assert summary["verified_picked"] == 19 and summary["holdout"] == 0  # emlc's order chose them: no random sample


def test_a_file_that_is_not_a_label_studio_export_is_one_line(noisy_folder):
    bad = noisy_folder["tmp"] / "bad.json"
    bad.write_text(json.dumps([{"data": {"image": "x.png"}}]))
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(bad), "--dry-run"])
    assert result.exit_code == 2 and "bad.json" in result.output and "emlc_key" in result.output
    bad.write_text("{not json")
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(bad), "--dry-run"])
    assert result.exit_code == 2 and "not a Label Studio JSON export" in result.output
