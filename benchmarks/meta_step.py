"""Time the EMLC meta step against a plain cross-entropy step of the same student.

    python benchmarks/meta_step.py [--threads 1] [--rounds 5] [--models small_cnn,resnet18] [--json out.json]

For each model: per noisy batch of 64 (32 px; verified batch 64), the median time of a plain CE step and of
MetaTrainer.meta_step with K = 1, 2, 5 (a K-step meta update consumes K noisy batches of 64 as its K chunks
and is divided by K), plus a breakdown of one-step EMLC into teacher forward+backward, student step, clean
gradient and JVP. Rounds are interleaved in one process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from emlc_cli import meta
from emlc_cli.data.loaders import TensorSet
from emlc_cli.recipe import load_recipe
from emlc_cli.trainer import MetaTrainer, batch_stats_only


def make_trainer(backbone: str, k: int, width: int) -> MetaTrainer:
    recipe = load_recipe("quick", [f"model.backbone={backbone}", f"model.width={width}", f"meta.steps={k}",
                                   f"train.batch_size={64 * k}", "train.clean_batch_size=64"])
    data = lambda n: TensorSet(torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,)))  # noqa: E731
    return MetaTrainer(recipe, 10, data(64 * k), data(128), data(16), torch.device("cpu"), seed=0)


def batches(trainer: MetaTrainer):
    g = torch.Generator().manual_seed(0)
    xn = trainer.batches(trainer.noisy.images, True, g)
    xc = trainer.batches(trainer.clean.images[:64], True, g)
    return xn, trainer.noisy.labels, xc, trainer.clean.labels[:64]


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def plain_step(trainer: MetaTrainer, xn, yn) -> None:
    loss = F.cross_entropy(trainer.student(xn), yn)
    trainer.student_opt.zero_grad()
    loss.backward()
    trainer.student_opt.step()


def breakdown(trainer: MetaTrainer, xn, yn, xc, yc) -> dict[str, float]:
    teacher = trainer.teacher

    def teacher_fb():
        f, logits = teacher.classifier.features_and_logits(torch.cat([xn, xc]))
        (logits.sum() + teacher.enhancer(f[:64], yn).sum()).backward()

    params = dict(trainer.student.named_parameters())
    inputs = torch.cat([xn, xc[32:]])
    soft = F.one_hot(torch.cat([yn, yc[32:]]), 10).float()

    def student_step():
        loss = meta.soft_cross_entropy(trainer.student(inputs), soft)
        trainer.student_opt.zero_grad()
        loss.backward()
        trainer.student_opt.step()

    def clean_grad():
        with batch_stats_only(trainer.student):
            torch.autograd.grad(F.cross_entropy(trainer.student(xc), yc), list(params.values()))

    before = {n: p.detach().clone() for n, p in params.items()}
    tangent = {n: torch.randn_like(p) for n, p in params.items()}

    def jvp():
        with batch_stats_only(trainer.student):
            meta.target_gradient(trainer._student_forward, before, tangent, inputs, 0.01)

    return {"teacher_fwd_bwd": timed(teacher_fb), "student_step": timed(student_step),
            "clean_grad": timed(clean_grad), "jvp": timed(jvp)}


def measure(backbone: str, width: int, rounds: int) -> dict:
    trainers = {k: make_trainer(backbone, k, width) for k in (1, 2, 5)}
    rows: dict[str, list[float]] = {"plain": [], **{f"emlc_k{k}": [] for k in trainers}}
    parts: dict[str, list[float]] = {}
    for _ in range(rounds):
        xn, yn, xc, yc = batches(trainers[1])
        rows["plain"].append(timed(lambda: plain_step(trainers[1], xn, yn)))
        for k, trainer in trainers.items():
            xk, yk, _, _ = batches(trainer)
            rows[f"emlc_k{k}"].append(timed(lambda: trainer.meta_step(xk, yk, xc, yc, 0.05)) / k)
        for name, value in breakdown(trainers[1], xn, yn, xc, yc).items():
            parts.setdefault(name, []).append(value)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"model": backbone, "seconds": med, "ratio_to_plain": {k: v / med["plain"] for k, v in med.items()},
            "breakdown_ratio_to_plain": {k: statistics.median(v) / med["plain"] for k, v in parts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="small_cnn:32,resnet18")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for spec in args.models.split(","):
        name, _, width = spec.partition(":")
        result = measure(name, int(width or 16), args.rounds)
        results.append(result)
        r = result["ratio_to_plain"]
        print(f"{name:<10} threads={torch.get_num_threads()} plain={result['seconds']['plain']*1000:.1f}ms "
              + " ".join(f"{k}={v:.2f}x" for k, v in r.items() if k != "plain")
              + " | " + " ".join(f"{k}={v:.2f}x" for k, v in result["breakdown_ratio_to_plain"].items()), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
