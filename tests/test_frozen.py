"""Frozen-backbone mode: images embedded once by a pretrained backbone, heads trained on cached features."""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import CLASSES, COLOURS, TINY, make_image
from emlc_cli.cli.app import app
from emlc_cli.student.evaluation import evaluate_student, evaluate_truth
from emlc_cli.models.nets import SmallCNN

runner = CliRunner()


def pretrained_file(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in SmallCNN(8).state_dict().items()}, str(path))
    return path


def test_frozen_backbone_cleans_on_cached_features(noisy_folder):
    weights, out = pretrained_file(noisy_folder["tmp"]), noisy_folder["tmp"] / "frozen"
    args = ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "quick", *TINY,
            "model.freeze_backbone=true", f"model.weights={weights}", "--out", str(out), "--device", "cpu", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = evaluate_truth(out, noisy_folder["truth"])
    assert scores["noisy_corrected_accuracy"] > scores["noisy_given_accuracy"] + 0.1, scores
    config = json.loads((out / "student.json").read_text())
    assert config["architecture"] == "mlp" and config["frozen_backbone"]["architecture"] == "small_cnn"
    assert config["in_features"] == SmallCNN(8).out_features
    saved, original = load_file(str(out / "backbone.safetensors")), load_file(str(weights))
    for name, value in original.items():  # the backbone is frozen: written back unchanged
        torch.testing.assert_close(saved[f"{name}"], value)
    assert "model:\n" in (out / "recipe.yaml").read_text() and "freeze_backbone: true" in (out / "recipe.yaml").read_text()
    test_root = noisy_folder["tmp"] / "test_images"  # correctly labelled images the run never saw
    rng = np.random.default_rng(7)
    for name in CLASSES:
        (test_root / name).mkdir(parents=True)
        for i in range(5):
            make_image(COLOURS[name], rng).save(test_root / name / f"{i}.png")
    assert evaluate_student(out, test_root, device="cpu")["accuracy"] > 0.9


def test_frozen_backbone_needs_pretrained_weights(noisy_folder):
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]),
                                 "model.freeze_backbone=true", "--out", str(noisy_folder["tmp"] / "x")])
    assert result.exit_code == 2
    assert "model.freeze_backbone" in result.output and "model.weights" in result.output
    assert not (noisy_folder["tmp"] / "x").exists()
