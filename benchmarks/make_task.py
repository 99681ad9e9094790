"""Write a CIFAR-10 label-noise task: labels.csv (noisy), clean.csv (verified), truth.csv.

    python benchmarks/make_task.py CIFAR_ROOT OUT --noisy 10000 --clean 1000 --noise symmetric --rate 0.5
    python benchmarks/make_task.py CIFAR_ROOT OUT --noise real --real-csv ../shared/data/cifar10n-random1.csv --rate 0.4
CIFAR_ROOT holds train/<class>/*.jpg and test/<class>/*.jpg (../shared/data/cifar10-jpeg.tar.gz extracted).

Noise: symmetric and asymmetric (CIFAR flips) are seeded flips; `real` takes the human labels of --real-csv
(CIFAR-10N), drawing wrong and right rows so that `--rate` of the noisy pool is wrong (0: the file's own rate);
`instance` gives each flipped image the class a weakly trained model confuses it with (--confusions, a
probs.npy written by `quality_matrix.py`, else the file's own most likely wrong class), for `--rate` of them.
`--in-place`: the verified rows keep their noisy label in labels.csv (a user who verifies a random sample),
instead of being filed under their true class.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from emlc_cli.data import noise
from emlc_cli.data.manifest import read_path_label_csv
from emlc_cli.data.imagefolder import load_image_folder


def real_noise_pick(paths: list[str], truth: np.ndarray, human: dict[str, str], classes: list[str], n: int,
                    rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and their human labels, `rate` of them wrong (0: as often as in the file)."""
    given_all = np.array([classes.index(human[p]) for p in paths])
    wrong, right = np.flatnonzero(given_all != truth), np.flatnonzero(given_all == truth)
    if rate <= 0:
        pick = rng.choice(len(paths), size=n, replace=False)
    else:
        k = int(round(rate * n))
        pick = np.concatenate([rng.choice(wrong, size=k, replace=False), rng.choice(right, size=n - k, replace=False)])
        pick = rng.permutation(pick)
    return pick, given_all[pick]


def instance_noise(truth: np.ndarray, confusion: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Flip `rate` of the labels, each to the wrong class the model finds most likely for that image, flipping the
    images the model is least sure of first (the hard, ambiguous ones people get wrong)."""
    probs = confusion.copy()
    probs[np.arange(len(truth)), truth] = -1
    wrong_class = probs.argmax(1)
    order = np.argsort(-probs.max(1) + rng.uniform(0, 1e-3, len(truth)))
    flip = order[: int(round(rate * len(truth)))]
    given = truth.copy()
    given[flip] = wrong_class[flip]
    return given


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cifar_root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--noisy", type=int, default=10000)
    ap.add_argument("--clean", type=int, default=1000)
    ap.add_argument("--noise", choices=["symmetric", "asymmetric", "real", "instance"], default="symmetric")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--real-csv", type=Path)
    ap.add_argument("--confusions", type=Path, help="instance noise: N x C probabilities aligned with the train folder")
    ap.add_argument("--in-place", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train = load_image_folder(args.cifar_root / "train")
    rng = np.random.default_rng(args.seed)
    n = args.noisy + args.clean
    if args.noise == "real":
        human = {p: label for p, label, _ in read_path_label_csv(args.real_csv)}
        pick, given = real_noise_pick(train.paths, train.labels, human, train.classes, n, args.rate, rng)
        truth = train.labels[pick]
    else:
        pick = rng.choice(len(train), size=n, replace=False)
        truth = train.labels[pick]
        given = _synthetic(args, train, truth, pick, rng)
    if not args.in_place:
        given[: args.clean] = truth[: args.clean]  # verified rows filed under their true class
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [train.paths[i] for i in pick]
    _write(args.out / "labels.csv", paths, [train.classes[g] for g in given])
    _write(args.out / "truth.csv", paths, [train.classes[t] for t in truth])
    _write(args.out / "clean.csv", paths[: args.clean], [train.classes[t] for t in truth[: args.clean]])
    noisy_part = slice(args.clean, None)
    print(f"given-label accuracy on the noisy pool: {(given[noisy_part] == truth[noisy_part]).mean():.4f}")


def _synthetic(args: argparse.Namespace, train, truth: np.ndarray, pick: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if args.noise == "symmetric":
        return noise.symmetric(truth, len(train.classes), args.rate, args.seed)
    if args.noise == "asymmetric":
        return noise.asymmetric(truth, train.classes, args.rate, seed=args.seed)
    return instance_noise(truth, np.load(args.confusions)[pick], args.rate, rng)


def _write(path: Path, paths: list[str], labels: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(zip(paths, labels))


if __name__ == "__main__":
    main()
