"""Write a CIFAR-10 label-noise task: labels.csv (noisy), clean.csv (verified), truth.csv, test folder link.

    python benchmarks/make_task.py CIFAR_ROOT OUT --noisy 10000 --clean 1000 --noise symmetric --rate 0.5
CIFAR_ROOT holds train/<class>/*.jpg and test/<class>/*.jpg (../shared/data/cifar10-jpeg.tar.gz extracted).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from emlc_cli import noise
from emlc_cli.data.sources import load_image_folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cifar_root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--noisy", type=int, default=10000)
    ap.add_argument("--clean", type=int, default=1000)
    ap.add_argument("--noise", choices=["symmetric", "asymmetric"], default="symmetric")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train = load_image_folder(args.cifar_root / "train")
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(train), size=args.noisy + args.clean, replace=False)
    truth = train.labels[pick]
    if args.noise == "symmetric":
        given = noise.symmetric(truth, len(train.classes), args.rate, args.seed)
    else:
        given = noise.asymmetric(truth, train.classes, args.rate, seed=args.seed)
    given[: args.clean] = truth[: args.clean]  # verified rows keep their true label as given label
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [train.paths[i] for i in pick]
    _write(args.out / "labels.csv", paths, [train.classes[g] for g in given])
    _write(args.out / "truth.csv", paths, [train.classes[t] for t in truth])
    _write(args.out / "clean.csv", paths[: args.clean], [train.classes[t] for t in truth[: args.clean]])
    noisy_part = slice(args.clean, None)
    print(f"given-label accuracy on the noisy pool: {(given[noisy_part] == truth[noisy_part]).mean():.4f}")


def _write(path: Path, paths: list[str], labels: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(zip(paths, labels))


if __name__ == "__main__":
    main()
