"""What the heap trims in prediction cost (issue 16): `prediction.predict` over N random 32-px images with the
trims on (every TRIM_EVERY batches, as shipped) and off, alternating in one process, quick's networks.

    python benchmarks/trim_cost.py --images 200000 --rounds 3

Prints seconds per round for each setting, the medians and their ratio. Run it alone: the ratio of two
settings timed side by side in one process is what it measures, not the absolute speed."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from emlc_cli.train import eval_pass as prediction
from emlc_cli.cache.batches import BatchMaker, TensorSet
from emlc_cli.models.build import build_classifier, build_teacher
from emlc_cli.recipe.schema import load_recipe


def timed_pass(student, teacher, batches: BatchMaker, data: TensorSet, trim_every: int) -> float:
    prediction.TRIM_EVERY = trim_every
    started = time.perf_counter()
    prediction.predict(student, teacher, batches, data, 10)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    m = load_recipe("quick").model
    torch.manual_seed(0)
    student = build_classifier(m.backbone, 10, m.width).eval().to(memory_format=torch.channels_last)
    teacher = build_teacher(m.backbone, 10, m.width, m.small_stem, m.weights, m.enhancer_hidden, m.label_embedding)
    teacher = teacher.eval().to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    data = TensorSet(images, torch.randint(0, 10, (args.images,)), torch.arange(args.images))
    batches = BatchMaker(torch.device("cpu"), "none", channels_last=True)
    settings = {"trims on": prediction.TRIM_EVERY, "trims off": 10**12}
    times: dict[str, list[float]] = {name: [] for name in settings}
    timed_pass(student, teacher, batches, data.part(range(0, 5000)), settings["trims off"])  # warm-up
    for _ in range(args.rounds):
        for name, every in settings.items():
            times[name].append(timed_pass(student, teacher, batches, data, every))
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    on, off = (statistics.median(times[name]) for name in settings)
    print(f"{args.images} images: median {on:.1f} s with trims, {off:.1f} s without: ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
