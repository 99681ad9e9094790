"""--resume across a move of emlc's modules: a training state written before the stage packages (issue 31) still
continues, because a state pickles only tensors and plain containers, never a class or module path of emlc's.

tests/fixtures/state_before_issue31 is a run stopped at the pause point (epoch 2, step 1; SIGTERM) by the flat
layout (main at 32c1d0d), on 90 three-dimensional feature vectors: the data, and the staging folder's marker and
training_state.pt (127 KB). The fixture's command is FEATURES_RUN below."""
from __future__ import annotations

import json
import pickle
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import pytest

from emlc_cli.run_folder.layout import STATE_FILE, staging_path
from tests.test_resume import interrupt, outputs, run_to_end

FIXTURE = Path(__file__).parent / "fixtures" / "state_before_issue31"
FEATURES_RUN = ["--recipe", "features", "--device", "cpu", "--quiet", "--seed", "3", "model.width=16",
                "train.student_lr=0.2", "train.teacher_lr=0.01", "train.epochs=4", "meta.warmup_epochs=1",
                "train.batch_size=16", "train.clean_batch_size=8", "correct.cross_fit=0"]


def features_cmd(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emlc_cli", "clean", str(folder / "features.npy"), "--labels", str(folder / "labels.csv"),
            "--clean", str(folder / "clean.csv"), "--out", str(out), *FEATURES_RUN, *extra]


def fixture_copy(tmp_path: Path) -> Path:
    for name in ("features.npy", "labels.csv", "clean.csv"):
        shutil.copy2(FIXTURE / name, tmp_path / name)
    shutil.copytree(FIXTURE / "partial", staging_path(tmp_path / "stopped"))
    return tmp_path


class PlainDict(dict):
    """An OrderedDict as a state_dict pickles it (with its `_metadata` attribute)."""


class NoEmlcGlobals(pickle.Unpickler):
    """Reads a torch checkpoint's data.pkl refusing every global but the ones a plain state needs (OrderedDict,
    tensor storages and the tensor rebuild), an emlc_cli class above all; tensors come back as None."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "emlc_cli":
            raise pickle.UnpicklingError(f"the state pickles {module}.{name}: a module move would break --resume")
        plain = ((module, name) == ("collections", "OrderedDict") or module == "torch" and name.endswith("Storage")
                 or module == "torch._utils" and name.startswith("_rebuild_tensor"))
        if not plain:
            raise pickle.UnpicklingError(f"the state pickles {module}.{name}, not a plain container or tensor")
        return PlainDict if name == "OrderedDict" else (lambda *args: None)

    def persistent_load(self, pid):
        return None


def plain_state(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        (pkl,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        return NoEmlcGlobals(archive.open(pkl)).load()


@pytest.mark.slow
def test_a_state_written_before_the_stage_packages_resumes(tmp_path):
    folder = fixture_copy(tmp_path)
    resumed = run_to_end(features_cmd(folder, folder / "stopped", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    after_resume = (folder / "stopped" / "emlc.log").read_text().split("--resume")[-1]
    assert "epoch 2 (meta)" in after_resume and "epoch 1 (" not in after_resume  # continued, not started afresh
    reference = run_to_end(features_cmd(folder, folder / "reference"))
    assert reference.returncode == 0, reference.stderr
    assert outputs(folder / "stopped") == outputs(folder / "reference")
    assert json.loads((folder / "stopped" / "summary.json").read_text())["epochs"][0]["score"] == 1.0


@pytest.mark.slow
def test_a_state_pickles_no_emlc_class_then_or_now(tmp_path):
    """Before the move and after it, training_state.pt holds only plain containers and tensors."""
    before = plain_state(FIXTURE / "partial" / STATE_FILE)
    folder = fixture_copy(tmp_path)
    shutil.rmtree(staging_path(folder / "now"), ignore_errors=True)
    assert interrupt(features_cmd(folder, folder / "now"), folder / "now", signal.SIGTERM) == 130
    now = plain_state(staging_path(folder / "now") / STATE_FILE)
    assert set(now) == set(before) >= {"trainer", "recipe", "seed", "inputs"}
    assert set(now["trainer"]) == set(before["trainer"])
    assert {k: v for k, v in now["inputs"].items() if k != "recipe"} == \
        {k: v for k, v in before["inputs"].items() if k != "recipe"}
    for section, keys in before["inputs"]["recipe"].items():  # later recipe keys add to a section, never remove
        assert not isinstance(keys, dict) or set(keys) <= set(now["inputs"]["recipe"][section]), section


def test_the_restricted_reader_refuses_an_emlc_class(tmp_path):
    import torch

    from emlc_cli.train.events import StepReport

    torch.save({"report": StepReport.__new__(StepReport)}, tmp_path / "state.pt")
    with pytest.raises(pickle.UnpicklingError, match="emlc_cli.train.events.StepReport"):
        plain_state(tmp_path / "state.pt")
