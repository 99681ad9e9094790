"""Pretrained timm backbones (issue 32): tiny random timm models saved as the Hub serves them, loaded through
local-dir: and through a Hugging Face cache with HF_HUB_OFFLINE=1; the embedding store's reuse and
invalidation; the model's own preprocessing recorded and applied by predict; refusals in one line. Offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.models import save_for_hf
from typer.testing import CliRunner

from conftest import TINY
from emlc_cli.cli.app import app
from emlc_cli.student.evaluation import evaluate_student, evaluate_truth, load_student, predict_probs
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.imagefolder import load_unlabelled_folder
from emlc_cli.student.inference import predict_run
from emlc_cli.data.spec import SourceSpec
from tests.hub_server import FakeHub

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.input_size=32", "model.width=32", "train.epochs=6", "meta.warmup_epochs=2", "train.batch_size=16",
         "train.clean_batch_size=8", "correct.cross_fit=0"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def save_tiny(folder: Path, architecture: str = "test_resnet", seed: int = 0) -> Path:
    """A random tiny timm model saved as timm.models.save_for_hf writes it (config.json + model.safetensors)."""
    torch.manual_seed(seed)
    save_for_hf(timm.create_model(architecture, pretrained=False), str(folder), safe_serialization=True)
    return folder


def hub_cache(cache: Path, repo: str, model: Path) -> Path:
    """The model laid out as huggingface_hub caches a download: models--ORG--NAME/snapshots/<commit>/ + refs/main."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((model / name).read_bytes())
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(COMMIT)
    return cache


def clean(folder: dict, out: Path, *extra: str, recipe: str = "frozen") -> dict:
    given = {e.partition("=")[0] for e in extra}
    small = [s for s in SMALL if s.partition("=")[0] not in given]
    args = ["clean", str(folder["root"]), "--clean", str(folder["clean"]), "--recipe", recipe, *small, *extra,
            "--out", str(out), "--device", "cpu", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


def emlc(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a fresh process: huggingface_hub reads HF_HUB_OFFLINE / HF_ENDPOINT when it is imported."""
    full = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "EMLC_DEBUG": "", **env}
    return subprocess.run([sys.executable, "-m", "emlc_cli", *args], env=full, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_local_dir_backbone_cleans_with_its_own_preprocessing(noisy_folder):
    model = save_tiny(noisy_folder["tmp"] / "vit", "test_vit")
    out = noisy_folder["tmp"] / "run"
    summary = clean(noisy_folder, out, f"model.backbone=local-dir:{model}")
    scores = evaluate_truth(out, noisy_folder["truth"])
    assert scores["noisy_corrected_accuracy"] > scores["noisy_given_accuracy"] + 0.1, scores
    assert summary["embedding"]["embedded"] == 120 and summary["embedding"]["dim"] == 64
    config = json.loads((out / "student.json").read_text())
    own = timm.data.resolve_model_data_config(timm.create_model("test_vit", pretrained=False))
    assert config["mean"] == list(own["mean"]) and config["std"] == list(own["std"]) and config["mean"] != [0.485, 0.456, 0.406]
    assert (config["input_size"], config["crop_pct"], config["interpolation"]) == (32, own["crop_pct"], own["interpolation"])
    rebuild = config["frozen_backbone"]["timm"]  # a ViT's position embeddings resampled to model.input_size
    assert rebuild["architecture"] == "test_vit" and rebuild["kwargs"]["img_size"] == 32


def test_predict_applies_the_recorded_preprocessing(noisy_folder):
    """predict decodes and normalises as the model's own data config says (mean/std 0.5, crop 0.95), recorded in
    the run's model JSON, not as emlc's own networks do: its probabilities are the model's on images prepared that
    way, and differ from ImageNet statistics' and from a stretched whole image's."""
    model = save_tiny(noisy_folder["tmp"] / "resnet")
    out = noisy_folder["tmp"] / "run"
    clean(noisy_folder, out, f"model.backbone=local-dir:{model}")
    classes, keys, probs, _ = predict_run(out, SourceSpec(str(noisy_folder["root"])), device="cpu")
    student, config = load_student(out, torch.device("cpu"))
    own = timm.data.resolve_model_data_config(timm.create_model("test_resnet", pretrained=False))
    images, _ = decode_images(load_unlabelled_folder(noisy_folder["root"]), 32, resize="crop", crop_pct=own["crop_pct"],
                              interpolation=own["interpolation"])
    # predict embeds through the store, as training did: features kept at float16, hence 1e-4, not float32's 1e-6
    np.testing.assert_allclose(probs, predict_probs(student, images, torch.device("cpu"), config=config), atol=1e-4)
    imagenet = predict_probs(student, images, torch.device("cpu"), config={"input_size": 32})
    assert np.abs(probs - imagenet).max() > 1e-3
    stretched, _ = decode_images(load_unlabelled_folder(noisy_folder["root"]), 32)
    assert np.abs(probs - predict_probs(student, stretched, torch.device("cpu"), config=config)).max() > 1e-3


def test_predict_and_evaluate_read_and_keep_embeddings_in_the_store(noisy_folder, monkeypatch):
    """The run's own images were embedded by clean: predict on them embeds nothing. New images are embedded once
    and kept: predicting them again, or evaluating on them, embeds nothing. Same numbers either way."""
    import shutil

    from emlc_cli.train import frozen

    model, out = save_tiny(noisy_folder["tmp"] / "resnet"), noisy_folder["tmp"] / "run"
    clean(noisy_folder, out, f"model.backbone=local-dir:{model}")
    embedded, original = [], frozen._embed_all
    monkeypatch.setattr(frozen, "_embed_all", lambda ds, *rest: embedded.append(len(ds)) or original(ds, *rest))
    first = predict_run(out, SourceSpec(str(noisy_folder["root"])), device="cpu")[2]
    assert embedded == []
    other = shutil.copytree(noisy_folder["root"], noisy_folder["tmp"] / "other")
    again = [predict_run(out, SourceSpec(str(other)), device="cpu")[2] for _ in range(2)]
    assert embedded == [120]
    np.testing.assert_array_equal(again[0], again[1])
    np.testing.assert_allclose(again[0], first, atol=1e-6)  # the same images under another folder: the same numbers
    assert evaluate_student(out, str(other), device="cpu")["images"] == 120
    assert embedded == [120]


def test_decoding_matches_timms_own_transform(tmp_path):
    """Resize to size / crop_pct and centre crop, in one resampling: the embedding of timm's transform's image."""
    net = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    config = timm.data.resolve_model_data_config(net)
    rng = np.random.default_rng(3)
    folder = tmp_path / "photos"
    folder.mkdir()
    picture = Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).resize((600, 400), Image.BICUBIC)
    picture.save(folder / "a.png")
    size = config["input_size"][1]
    theirs = timm.data.create_transform(**config)(picture.convert("RGB")).unsqueeze(0)
    pixels, _ = decode_images(load_unlabelled_folder(folder), size, resize="crop", crop_pct=config["crop_pct"],
                              interpolation=config["interpolation"])
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    ours = (pixels.float() / 255 - mean) / std
    with torch.no_grad():
        similarity = torch.cosine_similarity(net(ours), net(theirs)).item()
    assert similarity > 0.99, similarity
    assert (ours - theirs).abs().mean() < 0.05


def test_second_run_embeds_nothing_until_weights_or_preprocessing_change(noisy_folder):
    model = save_tiny(noisy_folder["tmp"] / "resnet")
    tmp, name = noisy_folder["tmp"], f"model.backbone=local-dir:{model}"
    assert clean(noisy_folder, tmp / "a", name)["embedding"]["embedded"] == 120
    again = clean(noisy_folder, tmp / "b", name)["embedding"]
    assert (again["embedded"], again["reused"]) == (0, 120)
    probs = [np.load(tmp / run / "probs.npy") for run in ("a", "b")]  # the rerun decides on the very same numbers
    assert np.array_equal(*probs)
    assert clean(noisy_folder, tmp / "c", name, "model.input_size=24")["embedding"]["embedded"] == 120  # preprocessing
    assert clean(noisy_folder, tmp / "d", name, "model.embed_flip=true")["embedding"]["embedded"] == 120
    from emlc_cli.cache import embeddings

    assert {e.info["backbone"] for e in embeddings.entries()} == {f"local-dir:{model}"}  # what `emlc cache ls` shows
    moved = model.rename(tmp / "moved")  # the same weights elsewhere: named by their digest, not their folder
    assert clean(noisy_folder, tmp / "g", f"model.backbone=local-dir:{moved}")["embedding"]["embedded"] == 0
    save_tiny(moved, seed=1)  # the same folder, other weights
    assert clean(noisy_folder, tmp / "e", f"model.backbone=local-dir:{moved}")["embedding"]["embedded"] == 120
    assert clean(noisy_folder, tmp / "f", f"model.backbone=local-dir:{moved}")["embedding"]["embedded"] == 0


@pytest.mark.parametrize("damage", ["fifo", "deep", "row"])
def test_a_damaged_embedding_entry_is_embedded_again_never_read_blindly(noisy_folder, damage):
    """The embedding store's files are read as the image store's are (issue 30): a FIFO for unreadable.json is
    never opened (it hung), JSON nested 100k deep and a row outside the entry are a damaged entry, not a crash."""
    model = save_tiny(noisy_folder["tmp"] / "resnet")
    name = f"model.backbone=local-dir:{model}"
    entry = Path(clean(noisy_folder, noisy_folder["tmp"] / "a", name)["embedding"]["store"])
    target = entry / ("unreadable.json" if damage != "deep" else "info.json")
    target.unlink()
    if damage == "fifo":
        os.mkfifo(target)
    else:
        target.write_text("[" * 100_000 + "]" * 100_000 if damage == "deep" else "[[-1, \"gone\"]]")
    assert clean(noisy_folder, noisy_folder["tmp"] / "b", name)["embedding"]["embedded"] == 120


def test_hub_cache_offline_loads_like_a_download(noisy_folder):
    """hf-hub:ORG/NAME resolves from a Hugging Face cache with HF_HUB_OFFLINE=1 (the path a real download takes);
    the run records the snapshot's commit as the weights' identity and needs no network to be evaluated."""
    tmp = noisy_folder["tmp"]
    cache = hub_cache(tmp / "hub", "acme/tiny-resnet", save_tiny(tmp / "resnet"))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp / "home")}
    done = emlc("clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "frozen", *SMALL,
                "model.backbone=hf-hub:acme/tiny-resnet", "-o", str(tmp / "run"), "--device", "cpu", "-q", env=env, cwd=tmp)
    assert done.returncode == 0, done.stderr
    frozen = json.loads((tmp / "run" / "student.json").read_text())["frozen_backbone"]
    assert frozen["digest"] == f"hub:{COMMIT}" and frozen["timm"]["architecture"] == "test_resnet"


def test_without_network_the_cache_is_used_at_once_without_retries(noisy_folder):
    """HF_HUB_OFFLINE unset and a Hub host that does not resolve (no network): huggingface_hub alone retries five
    times, a warning each, before it reads its cache. The cached model loads with no warning; one not cached is
    one line."""
    tmp = noisy_folder["tmp"]
    cache = hub_cache(tmp / "hub", "acme/tiny-resnet", save_tiny(tmp / "resnet"))
    no_proxy = {name: "" for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")}
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://hub.invalid", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp / "home"),
           **no_proxy}
    args = ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "frozen", *SMALL,
            "--device", "cpu", "-q"]
    done = emlc(*args, "model.backbone=hf-hub:acme/tiny-resnet", "-o", str(tmp / "run"), env=env, cwd=tmp)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    missing = emlc(*args, "model.backbone=hf-hub:acme/not-cached", "-o", str(tmp / "run2"), env=env, cwd=tmp)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "the Hub cannot be reached" in missing.stderr


@pytest.mark.parametrize("name", ["hf-hub:acme/not-cached", "vit_small_patch14_dinov2.lvd142m"])
def test_offline_and_not_cached_is_one_line(noisy_folder, name):
    tmp = noisy_folder["tmp"]
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "empty"), "HF_HOME": str(tmp / "home")}
    done = emlc("clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "frozen",
                f"model.backbone={name}", "--dry-run", env=env, cwd=tmp)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "HF_HUB_OFFLINE=1" in lines[0] and "local-dir:" in lines[0], lines
    assert "Traceback" not in done.stderr


def test_gated_model_is_one_line_without_the_token(noisy_folder):
    tmp, token = noisy_folder["tmp"], "hf_gatedSecretToken1234567890"
    with FakeHub() as server:
        server.gated.add("acme/gated")
        env = {"HF_ENDPOINT": server.url, "HF_TOKEN": token, "HF_HUB_CACHE": str(tmp / "hub"), "HF_HOME": str(tmp / "home"),
               "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
        done = emlc("clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "frozen",
                    "model.backbone=hf-hub:acme/gated", "--dry-run", env=env, cwd=tmp)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf-hub:acme/gated" in lines[0] and "HF_TOKEN" in lines[0], lines
    assert token not in done.stderr + done.stdout
    assert any(r["authorization"] == f"Bearer {token}" for r in server.requests)  # the token was sent, never shown


def test_bad_backbone_names_are_refused_before_anything_loads(noisy_folder):
    for name, words in [("hf-hub:nobody", "hf-hub:ORG/NAME"), ("timm:a/b", "model name"), ("not a name!", "model name")]:
        result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe",
                                     "frozen", f"model.backbone={name}", "--dry-run"])
        assert result.exit_code == 2 and "model.backbone" in result.output and words in result.output, result.output
    missing = noisy_folder["tmp"] / "nothing-here"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe",
                                 "frozen", f"model.backbone=local-dir:{missing}", "--dry-run"])
    assert result.exit_code == 2 and "config.json" in result.output and str(missing) in result.output, result.output


def test_without_recipe_images_get_the_offline_default_and_the_exact_pretrained_command(noisy_folder):
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "name: default" in result.output
    note = next(line for line in result.output.splitlines() if line.startswith("note:"))
    assert f"emlc clean {noisy_folder['root']} --clean {noisy_folder['clean']} --dry-run --recipe frozen" in note, note


def test_without_recipe_a_cached_default_backbone_runs_the_frozen_recipe(noisy_folder):
    tmp = noisy_folder["tmp"]
    cache = hub_cache(tmp / "hub", "timm/vit_small_patch14_dinov2.lvd142m", save_tiny(tmp / "vit", "test_vit"))
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp / "home")}
    done = emlc("clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--dry-run", env=env, cwd=tmp)
    assert done.returncode == 0, done.stderr
    assert "name: frozen" in done.stdout and "vit_small_patch14_dinov2.lvd142m is in the Hugging Face cache" in done.stderr


def test_a_from_scratch_run_too_weak_to_correct_names_the_pretrained_command(noisy_folder):
    """Every verified image picked by emlc: nothing to check a rule on, the run is too weak to correct."""
    rows = [line.split(",") for line in noisy_folder["clean"].read_text().splitlines()[1:]]
    picked = noisy_folder["tmp"] / "picked.csv"
    picked.write_text("path,label,picked\n" + "".join(f"{p},{label},1\n" for p, label in rows))
    out = noisy_folder["tmp"] / "weak"
    result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(picked), "--recipe", "quick", *TINY,
                                 "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label_accuracy"]["too_weak"]
    hint = summary["pretrained_hint"]
    assert hint in summary["warnings"] and f"--device cpu --out {out}-frozen --recipe frozen" in hint
    assert "train.epochs" not in hint and "quick" not in hint
    assert "pretrained backbone usually corrects far more" in " ".join(result.output.split())


def test_recipes_list_says_what_each_recipe_downloads_and_costs():
    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0, listed.output
    blocks = {block.split()[0]: block for block in listed.output.split("\n") if block and not block.startswith(" ")}
    lines = listed.output.splitlines()
    for name in blocks:
        at = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        assert lines[at + 1].strip().startswith("downloads:") and lines[at + 2].strip().startswith("cost:"), name
    frozen = lines[next(i for i, line in enumerate(lines) if line.startswith("frozen ")) + 1]
    assert "timm/vit_small_patch14_dinov2.lvd142m from the Hugging Face Hub" in frozen and "not cached here" in frozen
    assert lines[next(i for i, line in enumerate(lines) if line.startswith("quick ")) + 1].strip() == "downloads: nothing"


def test_readme_offline_pretrained_line_runs(noisy_folder):
    """README's Photos block: its local-dir: line, as written, on a tiny saved model (the Hub lines are illustrative)."""
    import re
    import shlex

    blocks = re.search(r"### Photos: a pretrained backbone.*?```bash\n.*?```.*?```bash\n(.*?)```",
                       (REPO_ROOT / "README.md").read_text(), re.S)
    (line,) = blocks[1].strip().splitlines()
    model = save_tiny(noisy_folder["tmp"] / "my_model")
    paths = {"./photos": str(noisy_folder["root"]), "clean.csv": str(noisy_folder["clean"]),
             "model.backbone=local-dir:./my_model": f"model.backbone=local-dir:{model}"}
    args = [paths.get(word, word) for word in shlex.split(line)[1:]]  # only the paths substituted
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(noisy_folder["tmp"])
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = noisy_folder["tmp"] / "runs" / noisy_folder["root"].name
    assert json.loads((out / "student.json").read_text())["frozen_backbone"]["timm"]["architecture"] == "test_resnet"


def test_two_backbones_concatenate_their_embeddings_each_kept_and_prepared_its_own_way(noisy_folder):
    tmp = noisy_folder["tmp"]
    resnet, vit = save_tiny(tmp / "resnet"), save_tiny(tmp / "vit", "test_vit")
    both = f"model.backbone=local-dir:{resnet}+local-dir:{vit}"
    clean(noisy_folder, tmp / "one", f"model.backbone=local-dir:{resnet}")
    summary = clean(noisy_folder, tmp / "both", both)
    assert [view["embedded"] for view in summary["embedding"]["views"]] == [0, 120]  # the ResNet's were kept
    config = json.loads((tmp / "both" / "student.json").read_text())
    assert config["in_features"] == summary["embedding"]["dim"] == 96 + 64
    parts = config["frozen_backbone"]["parts"]
    assert [p["timm"]["architecture"] for p in parts] == ["test_resnet", "test_vit"]
    assert parts[0]["preprocessing"]["interpolation"] != parts[1]["preprocessing"]["interpolation"]
    scores = evaluate_truth(tmp / "both", noisy_folder["truth"])
    assert scores["noisy_corrected_accuracy"] > scores["noisy_given_accuracy"] + 0.1, scores
    classes, keys, probs, _ = predict_run(tmp / "both", SourceSpec(str(noisy_folder["root"])), device="cpu")
    fitted = np.array([classes.index(key.split("/")[1].split("_")[0]) for key in keys])  # file names hold the true class
    assert len(keys) == 120 and (probs.argmax(1) == fitted).mean() > 0.9
