"""The finetune recipe (issue 32, item 4): a pretrained timm backbone in the teacher and the student, trained end to
end with EMLC at train.backbone_lr_factor of the heads' learning rate, on images prepared the model's own way.
A tiny random timm model saved as the Hub serves it, loaded through local-dir:. Offline, CPU, test size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from emlc_cli.cache import store
from emlc_cli.cache.batches import TensorSet
from emlc_cli.cli.app import app
from emlc_cli.data.imagefolder import load_unlabelled_folder
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import RecipeError
from emlc_cli.models.backbones import TIMM
from emlc_cli.models.build import image_input, traits
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.student.evaluation import evaluate_truth
from emlc_cli.student.inference import predict_run
from emlc_cli.train.trainer import MetaTrainer
from tests.test_pretrained import save_tiny

runner = CliRunner()
SMALL = ["model.input_size=32", "train.epochs=3", "meta.warmup_epochs=1", "train.batch_size=16",
         "train.clean_batch_size=8", "train.student_lr=0.2"]  # a random tiny network learns the colours in 3 epochs


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """One `emlc clean --recipe finetune` on 120 32-px images with a local-dir: test_resnet, shared by the tests."""
    from conftest import build_noisy_folder

    folder = build_noisy_folder(tmp_path_factory.mktemp("finetune"))
    model = save_tiny(folder["tmp"] / "resnet")
    out = folder["tmp"] / "run"
    result = runner.invoke(app, ["clean", str(folder["root"]), "--clean", str(folder["clean"]), "--recipe", "finetune",
                                 f"model.backbone=local-dir:{model}", *SMALL, "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    return {**folder, "model": model, "out": out}


def test_the_backbone_is_trained_from_its_pretrained_weights_and_corrects(finetuned):
    """The stem's convolutions move by percents (weight decay alone would move them by 1e-5: the residual blocks'
    last BatchNorm starts at zero in timm, so their convolutions see no gradient yet and show that floor)."""
    pretrained = load_file(str(finetuned["model"] / "model.safetensors"))
    student = load_file(str(finetuned["out"] / "student.safetensors"))
    assert all(f"backbone.{name}" in student for name in pretrained if not name.startswith("fc."))
    stem = [name for name in pretrained if name.startswith("conv1.") and pretrained[name].ndim == 4]
    moved = [float((student[f"backbone.{n}"] - pretrained[n]).norm() / pretrained[n].norm()) for n in stem]
    assert stem and min(moved) > 1e-3, moved
    assert not (finetuned["out"] / "backbone.safetensors").exists()  # the backbone is the student's own
    scores = evaluate_truth(finetuned["out"], finetuned["truth"])
    assert scores["noisy_corrected_accuracy"] > scores["noisy_given_accuracy"] + 0.1, scores


def test_the_run_records_the_models_preprocessing_and_evaluate_and_predict_reopen_images_so(finetuned):
    """The trainer's probabilities (probs.npy, the student's at the decision's temperature) are what predict gives
    on the same images: the trainer normalised with the model's mean/std (0.5) and the cache decoded with its crop
    and interpolation, as student.json records them."""
    out = finetuned["out"]
    config = json.loads((out / "student.json").read_text())
    assert (config["mean"], config["std"], config["crop_pct"], config["resize"]) == ([0.5] * 3, [0.5] * 3, 0.95, "crop")
    # the kwargs are what the saved config.json names (timm 1.0.21 writes fewer than later releases)
    assert config["timm"]["architecture"] == "test_resnet"
    assert set(config["timm"]["kwargs"]) <= {"in_chans", "global_pool"}
    classes, keys, probs, _ = predict_run(out, SourceSpec(str(finetuned["root"])), device="cpu")
    summary = json.loads((out / "summary.json").read_text())
    rows = {line.split(",")[0]: i for i, line in enumerate((out / "corrected.csv").read_text().splitlines()[1:])}
    trained = np.load(out / "probs.npy")[[rows[k] for k in keys]]
    logits = np.log(probs + 1e-12) / summary["temperature"]
    rescaled = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(rescaled / rescaled.sum(1, keepdims=True), trained, atol=2e-4)
    done = runner.invoke(app, ["evaluate", str(out), "--data", str(finetuned["root"]), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["images"] == 120


def test_backbone_lr_factor_splits_both_optimisers_and_follows_the_schedule(finetuned):
    recipe = load_recipe("finetune", [f"model.backbone=local-dir:{finetuned['model']}", *SMALL])
    assert recipe.train.backbone_lr_factor == 0.1
    data = TensorSet(torch.zeros(16, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1] * 8))
    trainer = MetaTrainer(recipe, 2, data, data, data, device=torch.device("cpu"))
    for model, optimiser in ((trainer.student, trainer.student_opt), (trainer.teacher.classifier, trainer.teacher_opt)):
        backbone, rest = optimiser.param_groups
        assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}
        assert model.head.weight in rest["params"]
    eta = trainer._set_lrs(5)
    assert eta < recipe.train.student_lr  # cosine
    assert [g["lr"] for g in trainer.student_opt.param_groups] == pytest.approx([0.1 * eta, eta])
    assert trainer.teacher_opt.param_groups[0]["lr"] == pytest.approx(0.1 * trainer.teacher_opt.param_groups[1]["lr"])
    assert trainer.lr_factors["backbone.conv1.0.weight"] == 0.1 and trainer.lr_factors["head.weight"] == 1.0
    assert trainer.tangent_chain is None  # timm networks: J g through torch.func.jvp


def test_timm_names_take_the_forward_mode_fallback_and_the_image_store_keys_crop_and_interpolation(finetuned):
    assert traits("test_resnet") is TIMM and traits(f"local-dir:{finetuned['model']}") is TIMM
    assert traits("resnet18").recorded_jvp and traits("small_cnn").recorded_jvp
    seen = image_input(f"local-dir:{finetuned['model']}", "pretrained", 32, 224, "stretch").preprocessing
    assert (seen.size, seen.resize, seen.crop_pct, seen.interpolation, seen.mean) == (32, "crop", 0.95, "bilinear", (0.5,) * 3)
    data = load_unlabelled_folder(finetuned["root"])
    keys = {store.key_for(data, 32, "crop"), store.key_for(data, 32, "crop", 0.95),
            store.key_for(data, 32, "crop", 1.0, "bicubic"), store.key_for(data, 32, "crop", 0.95, "bicubic")}
    assert len(keys) == 4 and store.key_for(data, 32, "crop", 1.0, "bilinear") == store.key_for(data, 32, "crop")


@pytest.mark.parametrize("value", ["0", "-0.1", "11", "fast"])
def test_backbone_lr_factor_is_validated(value):
    with pytest.raises(RecipeError) as info:
        load_recipe("finetune", [f"train.backbone_lr_factor={value}"])
    assert "train.backbone_lr_factor" in info.value.one_line()


def test_recipes_list_shows_finetune():
    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("finetune "))
    assert "timm/resnet50.a1_in1k" in lines[at + 1] and "GPU" in lines[at + 2]
