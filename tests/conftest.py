"""Small generated datasets: colour-coded classes a tiny CNN separates in seconds."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["blue", "green", "red"]
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
TINY = ["data.image_size=16", "model.width=8", "train.epochs=8", "meta.warmup_epochs=2", "train.batch_size=16",
        "train.clean_batch_size=8", "train.student_lr=0.05", "train.teacher_lr=0.003"]


def tiny(*changes: str) -> list[str]:
    """TINY with some keys set otherwise (a key may be given only once on the command line)."""
    keys = {change.split("=", 1)[0] for change in changes}
    return [item for item in TINY if item.split("=", 1)[0] not in keys] + list(changes)


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("path", "label")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 16) -> Image.Image:
    base = np.array(colour, dtype=np.float32)[None, None, :]
    pixels = base + rng.normal(0, 25, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session", autouse=True)
def no_cached_pretrained_backbone(tmp_path_factory):
    """`emlc clean` without --recipe runs the frozen recipe when its backbone is in the Hugging Face cache: tests
    see an empty one, whatever the machine has cached (emlc reads HF_HUB_CACHE when it decides)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def session_image_store(tmp_path_factory):
    """A store for fixtures of module scope, which are set up before any test's own (never ~/.cache/emlc)."""
    before = os.environ.get("EMLC_CACHE_DIR")
    os.environ["EMLC_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-store"))
    yield
    if before is None:
        os.environ.pop("EMLC_CACHE_DIR", None)
    else:
        os.environ["EMLC_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def image_store(tmp_path_factory, monkeypatch) -> Path:
    """Each test's own persistent image store (never the user's ~/.cache/emlc); subprocesses inherit it."""
    where = tmp_path_factory.mktemp("store")
    monkeypatch.setenv("EMLC_CACHE_DIR", str(where))
    return where / "images"


@pytest.fixture
def noisy_folder(tmp_path: Path) -> dict:
    """3 classes x 40 images; 30 % of the non-verified images filed under a wrong class; 6 verified per class."""
    return build_noisy_folder(tmp_path)


def build_noisy_folder(tmp_path: Path) -> dict:
    """noisy_folder's dataset under `tmp_path` (for fixtures of a wider scope)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    truth, clean = [], []
    for c, name in enumerate(CLASSES):
        for i in range(40):
            wrong = i >= 6 and rng.random() < 0.3
            given = CLASSES[(c + rng.integers(1, 3)) % 3] if wrong else name
            rel = f"{given}/{name}_{i:02d}.png"
            (root / given).mkdir(parents=True, exist_ok=True)
            make_image(COLOURS[name], rng).save(root / rel)
            truth.append((rel, name))
            if i < 6:
                clean.append((rel, name))
    return {
        "root": root,
        "clean": write_csv(tmp_path / "clean.csv", clean),
        "truth": write_csv(tmp_path / "truth.csv", truth),
        "tmp": tmp_path,
    }


@pytest.fixture(scope="module")
def isolated_datasets_cache(tmp_path_factory):
    """A per-module Hugging Face datasets cache, so tests never touch (or depend on) the user's."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
        yield
