"""Every documented example runs as written: the fenced python and shell blocks of README.md and docs/*.md (in
order, in one working folder holding the files they name: small generated data) and the examples of every
`--help`. Only a placeholder path or address may be substituted. A block that cannot run here is marked
illustrative in the file, with the reason (tests/doc_blocks.py); a test fails on a block that is neither."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import COLOURS, build_noisy_folder, make_image, write_csv
from tests.doc_blocks import ROOT, all_blocks, block, emlc_env, help_examples, run_shell
from tests.labelstudio_server import FakeLabelStudio
from tests.test_hf_sources import make_sources

pytestmark = pytest.mark.usefixtures("isolated_datasets_cache")
README, WALKTHROUGH = "README.md", "docs/python-api.md"
TOKEN = "docs-test-token-0123456789"
LOCAL_SOURCES = (README, "Hugging Face datasets and the Hub", 1)
RUN_HERE = {  # every block a test below runs; test_every_block_is_run_or_marked holds the docs to this list
    (README, "Use", 0), (README, "Python API", 0), (README, "Python API", 1), (README, "Reviewing corrections", 0),
    (README, "Reviewing corrections", 1), (README, "Reviewing corrections", 3), LOCAL_SOURCES,
    (README, "Photos: a pretrained backbone", 1),  # run as written by tests/test_pretrained.py (a tiny saved model)
    (WALKTHROUGH, "1. The data and what you verified", 0), (WALKTHROUGH, "2. Clean", 0),
    (WALKTHROUGH, "3. Look at the result", 0), (WALKTHROUGH, "4. Hand the model's view to other tools", 0),
    (WALKTHROUGH, "5. Verify more, clean again, predict", 0),
}
HELP_NOT_RUN = {  # help examples this suite does not run as written, and why
    "emlc demo": "about two minutes on 2 cores: tests/test_cli.py::test_demo_command_runs_end_to_end runs it shortened",
    "emlc demo --out runs/demo": "the same demo run, kept",
    "emlc demo train.epochs=4 meta.warmup_epochs=1": "decodes and trains the 2,000-image demo set; tests/test_cli.py runs a shorter one",
    "emlc clean ./images -c clean.csv -o runs/a --resume": "needs an interrupted run: tests/test_resume.py interrupts and resumes",
    "emlc clean hf://owner/name --split train -c clean.csv": "needs the Hugging Face Hub",
    "emlc push runs/images --repo me/images-clean --private --license cc-by-4.0": "needs the Hub: tests/test_hub.py uses a fake one",
    "emlc push runs/images --repo me/images-clean --card-notes notes.md": "needs the Hub: tests/test_hub.py uses a fake one",
    "emlc cache rm 3f2a9c": "a key of your own store (emlc cache ls lists them): tests/test_store.py removes by key",
    "EMLC_CACHE_DIR=none emlc clean ...": "`...` stands for any clean command line",
}


# ---- the data the examples name ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """The image folder of tests/conftest.py (120 images, 18 verified, labels a quick run corrects) and the 48 rows
    of tests/test_hf_sources.py as every other source, with the manifests the examples name."""
    root = tmp_path_factory.mktemp("doc-sources")
    folder = build_noisy_folder(root)  # images/, clean.csv, truth.csv
    truth = dict(line.split(",") for line in folder["truth"].read_text().splitlines()[1:])
    wrong = [(path, label) for path, label in truth.items() if path.split("/")[0] != label]
    write_csv(root / "decisions.csv", [(path, label, "1") for path, label in wrong[:3]], ("path", "label", "picked"))
    for i, (path, label) in enumerate(sorted(truth.items())[::10]):
        (root / "test_images" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / "images" / path, root / "test_images" / label / f"{i}.png")
        (root / "new_images").mkdir(exist_ok=True)
        shutil.copy(root / "images" / path, root / "new_images" / f"{i}.png")
    hf = make_sources(root / "hf")
    items = hf["items"]  # (path, given, true label, image, embedding, verified), in row order
    write_csv(root / "clean-ids.csv", [(str(i), it[2]) for i, it in enumerate(items) if it[5]], ("id", "label"))
    write_csv(root / "clean-photos.csv", [(f"img_{i:03d}.png", it[2]) for i, it in enumerate(items) if it[5]],
              ("id", "label"))
    for name, made in (("saved", "saved"), ("data.parquet", "data.parquet"), ("photos", "meta"), ("emb.npy", "emb.npy"),
                       ("labels.csv", "emb_labels.csv")):
        (root / "hf" / made).rename(root / name)
    return root


def workspace(sources: Path, where: Path) -> Path:
    """A fresh working folder whose inputs are links to the generated sources (they are only read)."""
    where.mkdir()
    for name in ("images", "clean.csv", "truth.csv", "decisions.csv", "clean-ids.csv", "clean-photos.csv", "saved",
                 "data.parquet", "photos", "emb.npy", "labels.csv", "test_images", "new_images"):
        (where / name).symlink_to(sources / name)
    shutil.copy(sources / "clean.csv", where / "verified.csv")
    return where


@pytest.fixture(scope="module")
def readme(sources, tmp_path_factory) -> dict:
    """README's working folder, shared by its blocks in the order the README gives them."""
    where = workspace(sources, tmp_path_factory.mktemp("readme") / "work")
    return {"cwd": where, "shims": where.parent / "bin"}


def shell(readme_or_ws: dict, code: str, substitute=lambda command: command, **env: str) -> list[str]:
    return run_shell(code, readme_or_ws["cwd"], emlc_env(readme_or_ws["shims"], **env), substitute)


# ---- README, top to bottom -------------------------------------------------------------------------------------
def test_readme_use(readme):
    outputs = shell(readme, block(README, "Use").code)
    assert (readme["cwd"] / "runs" / "images" / "corrected.csv").is_file() and (readme["cwd"] / "my.yaml").is_file()
    assert "accuracy" in outputs[1] and "accuracy" in outputs[2]


def test_readme_python_api(readme, monkeypatch):
    monkeypatch.chdir(readme["cwd"])
    scope: dict = {}
    exec(compile(block(README, "Python API").code, "README.md: Python API", "exec"), scope)
    assert scope["run"].path is None and scope["kept"].path == Path("runs/images-api")
    assert scope["again"].labels == scope["kept"].labels and len(scope["predicted"].labels) == 12
    assert "estimate" in scope


def test_readme_cleanlab(readme, monkeypatch):
    monkeypatch.chdir(readme["cwd"])
    scope: dict = {}
    exec(compile(block(README, "Python API", 1).code, "README.md: cleanlab", "exec"), scope)
    issues, probs = scope["issues"], scope["probs"]
    assert len(issues) == 120 and issues["predicted_label"].tolist() == probs.argmax(1).tolist()


def test_readme_review_and_next_round(readme):
    shell(readme, block(README, "Reviewing corrections").code)
    assert {"review.html"} <= {p.name for p in (readme["cwd"] / "runs" / "images").iterdir()}
    assert (readme["cwd"] / "report.html").is_file() and (readme["cwd"] / "sheet.png").is_file()
    assert json.loads((readme["cwd"] / "runs" / "images-2" / "summary.json").read_text())["verified"] == 21


def test_readme_label_studio(readme):
    with FakeLabelStudio(TOKEN) as server:
        outputs = shell(readme, block(README, "Reviewing corrections", 1).code,
                        lambda command: command.replace("http://localhost:8080", server.url), LABEL_STUDIO_API_KEY=TOKEN)
    assert [r["path"] for r in server.requests] == ["/api/projects", "/api/storages/localfiles", "/api/projects/7/import"]
    assert f"{server.url}/projects/7/data" in outputs[1] and TOKEN not in "".join(outputs)


def test_readme_cvat(readme):
    shell(readme, block(README, "Reviewing corrections", 3).code)
    assert {p.name for p in (readme["cwd"] / "cvat").iterdir()} >= {"annotations.xml", "labels.json", "frames.txt"}


def test_readme_local_sources(readme):
    """The local lines of the Hub section; each source's manifest keys its rows its own way (ids, file names)."""
    def manifest(command: str) -> str:
        if "./photos" in command:
            return command.replace("clean.csv", "clean-photos.csv")
        return command.replace("clean.csv", "clean-ids.csv").replace("runs/name", "runs/saved")

    shell(readme, block(*LOCAL_SOURCES).code, manifest)
    runs = {p.name for p in (readme["cwd"] / "runs").iterdir()}
    assert runs >= {"saved", "data", "photos", "data-emb", "emb"}
    assert (readme["cwd"] / "cleaned" / "README.md").is_file() and (readme["cwd"] / "images-clean").is_dir()


# ---- docs/python-api.md, cell by cell in one namespace ------------------------------------------------------
@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> dict:
    """my_images: 80 rows of a ClassLabel ["dog", "cat"] (rows 0-39 cat, 40-79 dog, a quarter of the others
    mislabelled), the rows the walk-through verifies labelled right; new_images; truth.csv."""
    import datasets

    where = tmp_path_factory.mktemp("walkthrough")
    rng = np.random.default_rng(3)
    names, verified = ["dog", "cat"], {3, 17, 25, 42, 58, 71, 5, 44}
    truth = ["cat" if i < 40 else "dog" for i in range(80)]
    given = [t if i in verified or rng.random() > 0.25 else {"cat": "dog", "dog": "cat"}[t] for i, t in enumerate(truth)]
    colour = {"cat": COLOURS["red"], "dog": COLOURS["blue"]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    images = [make_image(colour[t], rng) for t in truth]
    datasets.Dataset.from_dict({"image": images, "label": [names.index(g) for g in given]}, features=features) \
        .save_to_disk(str(where / "my_images"))
    datasets.Dataset.from_dict({"image": images[::10]}, features=datasets.Features({"image": datasets.Image()})) \
        .save_to_disk(str(where / "new_images"))
    write_csv(where / "truth.csv", [(str(i), t) for i, t in enumerate(truth)], ("id", "label"))
    return {"cwd": where, "scope": {}}


@pytest.mark.parametrize("heading", sorted(h for doc, h, _ in RUN_HERE if doc == WALKTHROUGH))
def test_python_api_walkthrough(walkthrough, heading, monkeypatch):
    monkeypatch.chdir(walkthrough["cwd"])
    exec(compile(block(WALKTHROUGH, heading).code, f"{WALKTHROUGH}: {heading}", "exec"), walkthrough["scope"])
    scope = walkthrough["scope"]
    if heading.startswith("4."):
        assert scope["run"].classes == ["dog", "cat"] and len(scope["issues"]) == 80
        assert scope["issues"]["predicted_label"].tolist() == scope["run"].probs.argmax(1).tolist()
    if heading.startswith("5."):
        assert len(scope["predicted"].labels) == 8 and scope["run2"].summary["verified"] == 8


# ---- every block is run here or marked ----------------------------------------------------------------------
def test_every_block_is_run_or_marked():
    unmarked = {b.key for b in all_blocks() if b.marked is None}
    assert unmarked - RUN_HERE == set(), "add these blocks to a test, or mark them <!-- illustrative: REASON -->"
    assert RUN_HERE - unmarked == set(), "these blocks are gone or marked: update RUN_HERE"
    assert all(len(b.marked) > 10 for b in all_blocks() if b.marked), "say why a block is illustrative"


def test_a_block_neither_run_nor_marked_is_caught(tmp_path, monkeypatch):
    from tests import doc_blocks

    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("# A\n\n```bash\nemlc demo\n```\n\n<!-- illustrative: needs a GPU, none here -->\n```python\nx = 1\n```\n")
    monkeypatch.setattr(doc_blocks, "ROOT", tmp_path)
    found = doc_blocks.blocks(page)
    assert [(b.key, b.marked) for b in found] == [(("docs/page.md", "A", 0), None),
                                                   (("docs/page.md", "A", 1), "needs a GPU, none here")]


# ---- the examples of every --help ----------------------------------------------------------------------------
def test_every_help_example_runs_as_written(sources, tmp_path):
    ws = {"cwd": workspace(sources, tmp_path / "work"), "shims": tmp_path / "bin"}
    examples = help_examples()
    assert set(HELP_NOT_RUN) <= set(examples), "HELP_NOT_RUN names an example no --help shows any more"
    moved = str(sources / "images")

    def placeholder(command: str) -> str:  # `--data /new/images`: the data moved; a fresh output beside the first
        if "/new/images" not in command:
            return command
        return re.sub(r"\./(cleaned|images-clean)\b", r"./\1-moved", command.replace("/new/images", moved))

    with FakeLabelStudio(TOKEN) as server:
        run = sorted((e for e in examples if e not in HELP_NOT_RUN), key=lambda e: "--dry-run" not in e)  # before --out exists
        shell(ws, "\n".join(run), lambda c: placeholder(c).replace("http://localhost:8080", server.url),
              LABEL_STUDIO_API_KEY=TOKEN)
    summary = json.loads((ws["cwd"] / "runs" / "a" / "summary.json").read_text())
    assert summary["recipe"] == "quick + train.epochs=5 meta.warmup_epochs=3 (scaled with train.epochs)"
    assert os.path.isdir(ws["cwd"] / "cleaned-moved") and os.path.isdir(ws["cwd"] / "images-clean-moved")
