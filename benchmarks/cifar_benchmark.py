"""CIFAR-10 label-cleaning benchmark: emlc vs cleanlab vs plain CE vs clean-only, same network and epochs.

    python benchmarks/make_task.py CIFAR_ROOT TASK --noise symmetric --rate 0.5
    python benchmarks/cifar_benchmark.py CIFAR_ROOT TASK --recipe quick --json TASK/results.json

Baselines train the recipe's own backbone with plain cross-entropy for train.epochs epochs (the same
budget as emlc). cleanlab: out-of-fold probabilities (--folds), find_label_issues, flagged rows relabelled
to the argmax, then a student trained on those labels. Needs the `bench` extra (cleanlab).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emlc_cli import metrics
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.imagefolder import load_image_folder
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.cache.batches import BatchMaker, ordered_batches
from emlc_cli.data.manifest import read_path_label_csv
from emlc_cli.models.build import build_classifier
from emlc_cli.recipe.schema import load_recipe


def train_ce(recipe, images, labels, num_classes, seed):
    """Plain cross-entropy, the recipe's backbone, optimiser settings and epoch count."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    m, t = recipe.model, recipe.train
    in_features = int(images.shape[1]) if images.ndim == 2 else 0
    model = build_classifier(m.backbone, num_classes, m.width, m.small_stem, in_features=in_features)
    if images.ndim == 4:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=t.student_lr, momentum=t.student_momentum, weight_decay=t.weight_decay)
    batches = BatchMaker(torch.device("cpu"), recipe.data.augment)
    steps = t.epochs * max(1, len(labels) // t.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(t.epochs):
        order = torch.randperm(len(labels), generator=gen)
        for idx in order[: len(order) - len(order) % t.batch_size].split(t.batch_size):
            loss = F.cross_entropy(model(batches(images[idx], True, gen)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict_probs(model, images):
    batches = BatchMaker(torch.device("cpu"), "none")
    return torch.cat([model(batches(images[i], False)).softmax(-1) for i in ordered_batches(len(images), 512)]).numpy()


def load_task(cifar: Path, task: Path, size: int):
    train = load_image_folder(cifar / "train")
    classes = train.classes
    given = {p: l for p, l, _ in read_path_label_csv(task / "labels.csv")}
    truth = {p: l for p, l, _ in read_path_label_csv(task / "truth.csv")}
    clean = {p for p, _, _ in read_path_label_csv(task / "clean.csv")}
    paths = sorted(given)
    subset = LabeledImages(cifar / "train", paths, np.zeros(len(paths), dtype=np.int64), classes)
    images, _ = decode_images(subset, size)
    lab = lambda d: torch.tensor([classes.index(d[p]) for p in paths])  # noqa: E731
    is_clean = torch.tensor([p in clean for p in paths])
    test = load_image_folder(cifar / "test")
    test_images, _ = decode_images(test, size)
    return classes, paths, images, lab(given), lab(truth), is_clean, test_images, torch.from_numpy(test.labels)


def row(name, corrected, given, truth, noisy, test_acc, seconds):
    c, g, t = corrected[noisy].numpy(), given[noisy].numpy(), truth[noisy].numpy()
    det = metrics.detection(c != g, g != t)
    return {"method": name, "given_acc": metrics.accuracy(g, t), "corrected_acc": metrics.accuracy(c, t),
            "detection_precision": det["precision"], "detection_recall": det["recall"], "detection_f1": det["f1"],
            "changed": int((c != g).sum()), "student_test_acc": test_acc, "seconds": round(seconds, 1)}


def run_cleanlab(recipe, images, given, noisy, classes, folds, seed, test_images, test_labels):
    from cleanlab.filter import find_label_issues

    started = time.perf_counter()
    n = len(given)
    probs = np.zeros((n, len(classes)), dtype=np.float32)
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(n) % folds
    for f in range(folds):
        train_idx = torch.from_numpy(np.flatnonzero(fold_of != f))
        held = torch.from_numpy(np.flatnonzero(fold_of == f))
        model = train_ce(recipe, images[train_idx], given[train_idx], len(classes), seed + f)
        probs[held.numpy()] = predict_probs(model, images[held])
    issues = find_label_issues(given.numpy(), probs)
    corrected = given.clone()
    relabel = torch.from_numpy(issues) & noisy
    corrected[relabel] = torch.from_numpy(probs.argmax(1))[relabel]
    student = train_ce(recipe, images, corrected, len(classes), seed)
    test_acc = metrics.accuracy(predict_probs(student, test_images).argmax(1), test_labels.numpy())
    return corrected, test_acc, time.perf_counter() - started


def run_emlc(cifar: Path, task: Path, recipe_name: str, overrides: list[str], out: Path, env: dict | None = None,
             test_root: Path | None | bool = None):
    """`emlc clean` on the task (env: more environment; a PYTHONPATH there is also the working directory, which
    `python -m` puts first), then `emlc evaluate` on test_root (default: the whole test set; False: none)."""
    import os

    started = time.perf_counter()
    base, cwd, env = [sys.executable, "-m", "emlc_cli"], (env or {}).get("PYTHONPATH"), {**os.environ, **(env or {})}
    subprocess.run([*base, "clean", str(cifar / "train"), "--labels", str(task / "labels.csv"), "--clean",
                    str(task / "clean.csv"), "--out", str(out), "--recipe", recipe_name, "--overwrite", "--quiet",
                    "--device", "cpu", *overrides], check=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - started
    if test_root is False:
        return seconds, None
    test = json.loads(subprocess.run([*base, "evaluate", str(out), "--data", str(test_root or cifar / "test"), "--json",
                                      "--device", "cpu"], check=True, capture_output=True, text=True, env=env, cwd=cwd).stdout)
    return seconds, test["accuracy"]


def print_timing(summary: dict, seconds: float) -> None:
    """Where emlc's time went (summary.json `timing`), and training images/s."""
    timing = summary["timing"]
    parts = ", ".join(f"{k.removeprefix('training.')} {v:.1f}s" for k, v in timing.items()
                      if k not in ("training", "iterations", "wall_over_iterations"))
    print(f"emlc: {seconds:.1f}s with evaluation ({summary['wall_seconds']:.1f}s in clean): {parts}; "
          f"iterations {timing['iterations']:.1f}s, wall/iterations {timing['wall_over_iterations']:.3f}; "
          f"{summary['images_per_s']:.0f} training images/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cifar", type=Path)
    ap.add_argument("task", type=Path)
    ap.add_argument("--recipe", default="quick")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="emlc,cleanlab,plain,clean_only")
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    recipe = load_recipe(args.recipe, args.overrides)
    classes, paths, images, given, truth, is_clean, test_images, test_labels = load_task(args.cifar, args.task, recipe.data.image_size)
    noisy = ~is_clean
    methods, results = args.methods.split(","), []
    if "emlc" in methods:
        out = args.task / "emlc_run"
        seconds, test_acc = run_emlc(args.cifar, args.task, args.recipe, args.overrides, out)
        rows = {r["path"]: r["corrected_label"] for r in __import__("csv").DictReader(open(out / "corrected.csv"))}
        corrected = torch.tensor([classes.index(rows[p]) for p in paths])
        results.append(row("emlc", corrected, given, truth, noisy, test_acc, seconds))
        print_timing(json.loads((out / "summary.json").read_text()), seconds)
    if "cleanlab" in methods:
        corrected, test_acc, seconds = run_cleanlab(recipe, images, given, noisy, classes, args.folds, args.seed, test_images, test_labels)
        results.append(row("cleanlab", corrected, given, truth, noisy, test_acc, seconds))
    if "plain" in methods:
        started = time.perf_counter()
        model = train_ce(recipe, images, given, len(classes), args.seed)
        test_acc = metrics.accuracy(predict_probs(model, test_images).argmax(1), test_labels.numpy())
        results.append(row("plain CE", given, given, truth, noisy, test_acc, time.perf_counter() - started))
    if "clean_only" in methods:
        started = time.perf_counter()
        model = train_ce(recipe, images[is_clean], given[is_clean], len(classes), args.seed)
        test_acc = metrics.accuracy(predict_probs(model, test_images).argmax(1), test_labels.numpy())
        results.append(row("clean only", given, given, truth, noisy, test_acc, time.perf_counter() - started))
    print(f"{'method':<12}{'given':>8}{'corrected':>11}{'det. F1':>9}{'test acc':>10}{'seconds':>9}")
    for r in results:
        print(f"{r['method']:<12}{r['given_acc']:>8.4f}{r['corrected_acc']:>11.4f}{r['detection_f1']:>9.4f}"
              f"{r['student_test_acc']:>10.4f}{r['seconds']:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
