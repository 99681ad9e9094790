"""`emlc review`: the HTML report (parsed, thumbnails decoded, labels checked against corrected.csv),
the PNG contact sheet (size and tiles), bounded size on 100k rows, and the error paths."""
from __future__ import annotations

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from emlc_cli import pipeline, review
from emlc_cli.cli.app import app
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.review import thumbnails
from emlc_cli.review.sheet import BACKGROUND, BORDER, sheet_geometry
from tests.conftest import CLASSES, COLOURS, make_image, write_csv

runner = CliRunner()
VOID = {"meta", "img", "input", "br", "hr", "link", "source", "col", "area", "base", "wbr"}
FAST = ["data.image_size=16", "model.width=8", "train.epochs=2", "meta.warmup_epochs=1", "train.batch_size=16",
        "train.clean_batch_size=8"]


class Page(HTMLParser):
    """Collects cards, their thumbnails and sections; checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.cards: list[dict[str, str]] = []
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self.section = ""
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and "data-section" in a:
            self.section = a["data-section"]
        if tag == "figure":
            self.cards.append({**a, "section": self.section})
        if tag == "img":
            self.images.append({**a, "in_card": str(bool(self.stack and "figure" in self.stack))})
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag == "link" or (tag == "script" and "src" in a):
            self.external.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors, page.errors[:5]
    assert page.stack == [], page.stack
    return page


def decode_data_uri(uri: str) -> Image.Image:
    head, _, payload = uri.partition(",")
    assert head in ("data:image/jpeg;base64", "data:image/png;base64"), head[:40]
    raw = base64.b64decode(payload, validate=True)
    Image.open(io.BytesIO(raw)).verify()
    return Image.open(io.BytesIO(raw))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def make_folder(root: Path, per_class: int = 20, seed: int = 0, verified: int = 4) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """An image folder like conftest's noisy_folder; returns (all rows as path,given, verified rows)."""
    rng = np.random.default_rng(seed)
    rows, clean = [], []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            given = CLASSES[(c + 1) % 3] if i >= verified and rng.random() < 0.3 else name
            rel = f"{given}/{name}_{i:02d}.png"
            (root / given).mkdir(parents=True, exist_ok=True)
            make_image(COLOURS[name], rng).save(root / rel)
            rows.append((rel, given))
            if i < verified:
                clean.append((rel, name))
    return sorted(rows), clean


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> dict:
    """One real (tiny) emlc run, shared by the report tests of this module."""
    tmp = tmp_path_factory.mktemp("review")
    _, clean = make_folder(tmp / "images", per_class=30, verified=8)  # 9 held out: enough to check corrections
    write_csv(tmp / "clean.csv", clean)
    trained = [f for f in FAST if not f.startswith(("train.epochs", "meta.warmup"))] + ["train.epochs=6", "meta.warmup_epochs=2"]
    recipe = load_recipe("quick", trained)  # long enough for confident predictions, so the guard lets labels change
    result = pipeline.clean(tmp / "images", [tmp / "clean.csv"], tmp / "run", recipe, device="cpu")
    return {"run": result.out, "root": tmp / "images", "clean": tmp / "clean.csv", "tmp": tmp}


def fake_run(tmp: Path, rows: list[tuple[str, str, str, float]], kind: str = "imagefolder", root: Path | None = None,
             verified: list[tuple[str, str]] = ()) -> Path:
    """A run folder without training: rows are (path, given, corrected, confidence)."""
    run = tmp / "run"
    run.mkdir(parents=True)
    classes = sorted({r[1] for r in rows} | {r[2] for r in rows})
    clean = dict(verified)
    corrected = [[p, g, clean.get(p, c), f"{conf:.4f}", int(clean.get(p, c) != g), "clean" if p in clean else "noisy"]
                 for p, g, c, conf in sorted(rows)]
    with (run / "corrected.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "corrected_label", "confidence", "changed", "split"], *corrected])
    noisy = [r for r in corrected if r[5] == "noisy"]
    changed = [r for r in noisy if r[4]]
    suggestions = sorted(noisy, key=lambda r: float(r[3]))[:max(1, len(noisy) // 20)]
    with (run / "to_verify.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "corrected_label", "confidence", "reason", "priority"],
                                      *[[*r[:4], "kept with low confidence", f"{1 - float(r[3]):.4f}"] for r in suggestions]])
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for r in noisy:
        matrix[index[r[1]]][index[r[2]]] += 1
    summary = {"images": len(rows), "noisy": len(noisy), "verified": len(clean), "changed": len(changed),
               "estimated_noise_rate": len(changed) / max(1, len(noisy)), "classes": classes, "change_matrix": matrix,
               "changed_per_class": {c: sum(1 for r in changed if r[1] == c) for c in classes},
               "epochs": [], "train_seconds": 1.0, "images_per_s": 100.0, "device": "cpu", "recipe": "quick"}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "source.json").write_text(json.dumps({"kind": kind, "root": str(root or tmp / "nowhere"), "classes": classes}))
    (run / "recipe.yaml").write_text("name: quick\n")
    return run


def test_report_parses_with_valid_thumbnails_and_labels_from_corrected_csv(small_run, tmp_path):
    run, top = small_run["run"], 10
    result = review.write_report(run, tmp_path / "report.html", top=top)
    page = parse(result.path)
    assert page.external == []
    corrected = {r["path"]: r for r in read_rows(run / "corrected.csv")}
    noisy = [r for r in corrected.values() if r["split"] == "noisy"]
    changed = sorted((r for r in noisy if r["changed"] == "1"), key=lambda r: (-float(r["confidence"]), r["path"]))
    unchanged = [r for r in noisy if r["changed"] == "0"]
    to_verify = read_rows(run / "to_verify.csv")
    expected = {"changed": min(top, len(changed)), "uncertain": min(top, len(unchanged)), "to_verify": min(top, len(to_verify))}
    assert changed and to_verify, "the tiny run should change some labels and suggest some to verify"
    by_section = {name: [c for c in page.cards if c["section"] == name] for name in expected}
    assert {k: len(v) for k, v in by_section.items()} == expected == result.shown
    thumbs = [img for img in page.images if img["in_card"] == "True"]
    assert len(thumbs) == sum(expected.values()) == result.thumbnails
    for img in thumbs:
        decoded = decode_data_uri(img["src"])
        assert max(decoded.size) <= review.THUMB_PX and decoded.size == (16, 16)  # the source images are 16 px
    assert result.missing_images == 0
    for card in page.cards:
        row = corrected[card["data-path"]]
        assert (card["data-given"], card["data-corrected"]) == (row["label"], row["corrected_label"])
        assert card["data-confidence"] == row["confidence"]
    assert [c["data-path"] for c in by_section["changed"]] == [r["path"] for r in changed[:top]]
    assert [c["data-path"] for c in by_section["to_verify"]] == [r["path"] for r in to_verify[:top]]
    confidences = [float(c["data-confidence"]) for c in by_section["uncertain"]]
    assert confidences == sorted(confidences)
    text = " ".join(page.text)
    summary = json.loads((run / "summary.json").read_text())
    for needle in ("Summary", "Given", "Changed labels", "Verify next", "Least certain unchanged", "quick"):
        assert needle in text
    assert f"{summary['changed']:,}" in text and f"{summary['images']:,}" in text


def test_cli_review_writes_report_and_sheet(small_run, tmp_path):
    result = runner.invoke(app, ["review", str(small_run["run"]), "--out", str(tmp_path / "r.html"),
                                 "--png", str(tmp_path / "s.png"), "--top", "5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").stat().st_size > 1000 and "wrote" in result.output
    assert Image.open(tmp_path / "s.png").size == sheet_geometry(5).size
    default = runner.invoke(app, ["review", str(small_run["run"])])
    assert default.exit_code == 0 and (small_run["run"] / "review.html").is_file()
    only_png = runner.invoke(app, ["review", str(small_run["run"]), "--png", str(tmp_path / "only.png")])
    assert only_png.exit_code == 0 and (tmp_path / "only.png").is_file()
    assert ".html" not in only_png.output and sorted(p.name for p in tmp_path.iterdir()) == ["only.png", "r.html", "s.png"]


def test_png_sheet_has_expected_size_and_tiles(small_run, tmp_path):
    changed = sum(1 for r in read_rows(small_run["run"] / "corrected.csv") if r["changed"] == "1")
    top = min(8, changed)
    result = review.write_sheet(small_run["run"], tmp_path / "sheet.png", top=top)
    geometry = sheet_geometry(top)
    sheet = Image.open(result.path).convert("RGB")
    assert sheet.size == result.size == geometry.size
    assert result.tiles == top and result.missing_images == 0
    tiles = 0
    for k in range(geometry.columns * geometry.rows):
        left, top_px, right, bottom = geometry.tile_box(k)
        corner = sheet.getpixel((left + 2, top_px + 10))
        if corner == BORDER:
            tiles += 1
            band = np.asarray(sheet.crop((left + 8, top_px + 8 + 128 + 2, right - 8, bottom - 4)), dtype=int)
            reddish = (band[..., 0] > band[..., 1] + 60) & (band[..., 0] > band[..., 2] + 60)
            greenish = (band[..., 1] > band[..., 0] + 40) & (band[..., 1] > band[..., 2] + 20)
            assert reddish.any() and greenish.any(), f"tile {k} has no labels drawn"
        else:
            assert corner == BACKGROUND, (k, corner)
    assert tiles == top


def test_review_help():
    result = runner.invoke(app, ["review", "--help"])
    assert result.exit_code == 0 and "--png" in result.output and "--top" in result.output


def test_sheet_geometry_grid():
    assert (sheet_geometry(1).columns, sheet_geometry(1).rows) == (1, 1)
    g = sheet_geometry(13)
    assert (g.columns, g.rows) == (6, 3)
    assert g.tile_box(12)[1] == g.tile_box(0)[1] + 2 * g.tile_size[1]


def test_report_size_is_bounded_on_100k_rows(tmp_path):
    rng = np.random.default_rng(1)
    classes = [f"c{i}" for i in range(10)]
    given = rng.integers(0, 10, size=100_000)
    fixed = np.where(rng.random(100_000) < 0.3, rng.integers(0, 10, size=100_000), given)
    rows = [(f"img/{i:06d}.jpg", classes[g], classes[f], float(c))
            for i, (g, f, c) in enumerate(zip(given, fixed, rng.random(100_000), strict=True))]
    run = fake_run(tmp_path, rows, kind="huggingface")
    result = review.write_report(run, top=50)
    page = parse(result.path)
    assert len(page.cards) == 150 and result.thumbnails == 150
    assert result.bytes < 1_500_000, result.bytes
    assert result.missing_images == len({c["data-path"] for c in page.cards})
    assert all(decode_data_uri(img["src"]) for img in page.images)


def test_open_run_images_helper_is_used_for_other_sources(tmp_path, monkeypatch):
    seen = []

    def open_run_images(run, record=None):
        seen.append(run)
        return lambda path: Image.new("RGB", (40, 30), (10, 200, 10))

    monkeypatch.setattr(thumbnails, "open_run_images", open_run_images)
    run = fake_run(tmp_path, [("a", "x", "y", 0.9), ("b", "x", "x", 0.4), ("c", "y", "y", 0.8)], kind="huggingface")
    result = review.write_report(run, top=5)
    assert seen and result.missing_images == 0
    page = parse(result.path)
    assert {decode_data_uri(i["src"]).size for i in page.images} == {(40, 30)}
    # clean manifests of non-folder sources are keyed by id
    assert '<meta name="emlc-manifest-key" content="id">' in result.path.read_text()


def test_unreachable_or_escaping_images_become_placeholders(tmp_path):
    root = tmp_path / "data"
    (root / "x").mkdir(parents=True)
    Image.new("RGB", (20, 20), "red").save(root / "x" / "ok.png")
    Image.new("RGB", (20, 20), "red").save(tmp_path / "secret.png")
    run = fake_run(tmp_path, [("x/ok.png", "x", "y", 0.9), ("../secret.png", "x", "y", 0.8), ("x/gone.png", "x", "x", 0.3)],
                   root=root)
    result = review.write_report(run, top=5)
    assert result.missing_images == 2
    page = parse(result.path)
    sizes = {c["data-path"]: decode_data_uri(i["src"]).size for c, i in zip(page.cards, page.images, strict=True)}
    assert sizes["x/ok.png"] == (20, 20) and sizes["../secret.png"] == (review.THUMB_PX, review.THUMB_PX)


def test_labels_and_paths_are_escaped(tmp_path):
    run = fake_run(tmp_path, [('a"<b>.png', "<i>x</i>", "y&z", 0.9), ("b.png", "<i>x</i>", "<i>x</i>", 0.5)])
    page = parse(review.write_report(run, top=5).path)
    assert {c["data-path"] for c in page.cards} >= {'a"<b>.png'}
    assert {c["data-given"] for c in page.cards} == {"<i>x</i>"}


@pytest.mark.parametrize("args, message", [
    (["review", "{tmp}/nope"], "run folder not found"),
    (["review", "{tmp}"], "summary.json"),
    (["review", "{run}", "--top", "0"], "--top"),
    (["review", "{run}", "--out", "{tmp}"], "is a folder"),
])
def test_review_errors_are_one_line(tmp_path, args, message):
    run = fake_run(tmp_path / "r", [("a.png", "x", "y", 0.9), ("b.png", "y", "y", 0.5)])
    result = runner.invoke(app, [a.format(tmp=tmp_path, run=run) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_sheet_refuses_a_run_without_changes(tmp_path):
    run = fake_run(tmp_path, [("a.png", "x", "x", 0.9), ("b.png", "y", "y", 0.5)])
    result = runner.invoke(app, ["review", str(run), "--png", str(tmp_path / "s.png")])
    assert result.exit_code == 2 and "nothing to put on a contact sheet" in result.output


def per_class_noise(html: str) -> dict[str, str]:
    table = re.search(r'<table class="per-class">.*?</table>', html, re.S).group(0)
    return dict(re.findall(r'<tr data-class="([^"]+)"><th>[^<]*</th><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>', table))


@pytest.mark.parametrize("estimate", [{"estimated_noise_rate": None, "label_accuracy": None},
                                      {"estimated_noise_rate": None, "label_accuracy": {"too_weak": True, "given": None}},
                                      {"estimated_noise_rate": 0.3, "label_accuracy": {"too_weak": True, "given": None}}])
def test_per_class_noise_is_unknown_where_the_run_could_not_estimate_it(tmp_path, estimate):
    """A run that changed nothing because its evidence was too weak measured no noise: not "0.0 %" per class."""
    run = fake_run(tmp_path, [("a/1.png", "a", "a", 0.9), ("a/2.png", "a", "a", 0.5), ("b/3.png", "b", "b", 0.7)])
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **estimate}))
    assert per_class_noise(review.write_report(run, top=5).path.read_text()) == {"a": "unknown", "b": "unknown"}


def test_per_class_noise_is_the_changed_share_where_the_run_estimated_it(tmp_path):
    run = fake_run(tmp_path, [("a/1.png", "a", "b", 0.9), ("a/2.png", "a", "a", 0.5), ("b/3.png", "b", "b", 0.7)])
    assert per_class_noise(review.write_report(run, top=5).path.read_text()) == {"a": "50.0%", "b": "0.0%"}
