"""Frozen-backbone speed: clean N images already embedded as D-d features (what `model.freeze_backbone` trains
on after its one embedding pass, and what `--feature-column` / `.npy` sources are).

    python benchmarks/frozen_features.py --images 50000 --dim 1280 --noise 0.4 --verified 1000 [--recipe features]

Features are synthetic (a Gaussian mixture: class means on a sphere plus per-image noise), since pretrained
weights cannot be downloaded here; labels are flipped symmetrically at --noise. Prints the wall time of
`emlc clean` (process start to finish) and its training time, and the label accuracy before and after.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_task(root: Path, n: int, dim: int, classes: int, noise: float, verified: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    means = rng.normal(size=(classes, dim)).astype(np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True) / 3.0
    features = means[truth] + rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim / 16)
    given = truth.copy()
    flip = rng.random(n) < noise
    given[flip] = (truth[flip] + rng.integers(1, classes, flip.sum())) % classes
    np.save(root / "features.npy", features.astype(np.float32))
    chosen = rng.choice(n, verified, replace=False)
    for name, rows, labels in (("labels.csv", range(n), given), ("clean.csv", chosen, truth), ("truth.csv", range(n), truth)):
        with (root / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label"])
            writer.writerows((str(i), f"c{labels[i]}") for i in rows)
    return truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--verified", type=int, default=1000)
    ap.add_argument("--recipe", default="features")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    root = Path(tempfile.mkdtemp(prefix="emlc_features_"))
    write_task(root, args.images, args.dim, args.classes, args.noise, args.verified)
    command = [sys.executable, "-m", "emlc_cli", "clean", str(root / "features.npy"), "--labels", str(root / "labels.csv"),
               "--clean", str(root / "clean.csv"), "--recipe", args.recipe, *args.overrides, "--out", str(root / "run"),
               "--device", "cpu", "-q"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    summary = json.loads((root / "run" / "summary.json").read_text())
    scores = subprocess.run([sys.executable, "-m", "emlc_cli", "evaluate", str(root / "run"), "--truth", str(root / "truth.csv"),
                             "--json"], check=True, capture_output=True, text=True).stdout
    scores = json.loads(scores)
    print(json.dumps({"images": args.images, "dim": args.dim, "recipe": args.recipe, "overrides": args.overrides,
                      "wall_seconds": round(wall, 1), "train_seconds": summary["train_seconds"],
                      "timing": summary.get("timing"),
                      "given_accuracy": scores["given_accuracy"], "corrected_accuracy": scores["corrected_accuracy"]}, indent=1))


if __name__ == "__main__":
    main()
