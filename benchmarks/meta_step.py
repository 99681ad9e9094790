"""Time the EMLC meta step against a plain cross-entropy step of the same student.

    python benchmarks/meta_step.py --threads 1 --models small_cnn:32 --ks 1,2,5,10 --json out.json
    python benchmarks/meta_step.py --threads 0 --models resnet18 --ks 1,5 --rounds 2 --repeats 1
    python benchmarks/meta_step.py --device cuda --models resnet18,resnet50@224 --ks 1,5

Per noisy batch of 64 (32 px unless `@size`; verified batch 64): the median time of a plain CE step
(forward, backward, SGD) and of MetaTrainer.meta_step with K = 1, 2, 5, 10, as ratios to the plain step. A K-step
meta update consumes K noisy batches of 64 (its K chunks) and is divided by K. "paired" is the median over rounds
of each round's meta time / that round's plain time, which a machine whose speed drifts between rounds
disturbs less than the ratio of the two medians. Two configurations:
`paper` (the student steps on the noisy batch only, as in the published code) and `recipe` (emlc's recipes:
half of the verified batch is mixed into each student step, `meta.mix_clean`). A breakdown of one-step EMLC
times its parts in isolation: teacher forward+backward (backbone on noisy+verified, enhancer), teacher optimiser
step, student step (forward, backward, SGD, recording the activations the JVP reuses), clean-loss gradient
after the step, and the JVP. Rounds are interleaved in one process; medians are printed and saved as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from emlc_cli.train import meta
from emlc_cli.cache.batches import TensorSet
from emlc_cli.models.build import batch_stats_only
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.train.trainer import MetaTrainer


def make_trainer(backbone: str, k: int, width: int, size: int, mix_clean: bool, device: torch.device) -> MetaTrainer:
    recipe = load_recipe("quick", [f"model.backbone={backbone}", f"model.width={width}", f"meta.steps={k}",
                                   f"train.batch_size={64 * k}", "train.clean_batch_size=64", f"data.image_size={size}",
                                   f"meta.mix_clean={str(mix_clean).lower()}", "model.small_stem=" + str(size <= 64).lower()])
    data = lambda n: TensorSet(torch.randint(0, 255, (n, 3, size, size), dtype=torch.uint8, device=device),  # noqa: E731
                               torch.randint(0, 10, (n,), device=device))
    return MetaTrainer(recipe, 10, data(64 * k), data(128), data(16), device, seed=0)


def batches(trainer: MetaTrainer) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    xn = trainer.batches(trainer.noisy.images, True, g)
    xc = trainer.batches(trainer.clean.images[:64], True, g)
    return xn, trainer.noisy.labels, xc, trainer.clean.labels[:64]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - started) / repeats


def plain_step(trainer: MetaTrainer, xn, yn) -> None:
    with trainer.autocast():
        loss = F.cross_entropy(trainer.student(xn).float(), yn)
    trainer.student_opt.zero_grad(set_to_none=True)
    loss.backward()
    trainer.student_opt.step()


def breakdown(trainer: MetaTrainer, xn, yn, xc, yc, device: torch.device, repeats: int) -> dict[str, float]:
    teacher, half = trainer.teacher, 32
    mixed = trainer.recipe.meta.mix_clean
    inputs = torch.cat([xn, xc[half:]]) if mixed else xn
    soft = F.one_hot(torch.cat([yn, yc[half:]]) if mixed else yn, 10).float()
    params = dict(trainer.student.named_parameters())
    state: dict = {}

    def teacher_fb():
        with trainer.autocast():
            f, logits = teacher.classifier.features_and_logits(torch.cat([xn, xc]))
        (logits.float().sum() + teacher.enhancer(f[:64].float(), yn).sum()).backward()

    def student_step():
        state["before"] = {n: p.detach().clone() for n, p in params.items()}
        with trainer.autocast(), trainer._recording() as recorded:
            loss = meta.soft_cross_entropy(trainer.student(inputs).float(), soft)
        trainer.student_opt.zero_grad(set_to_none=True)
        loss.backward()
        trainer.student_opt.step()
        state["recorded"] = recorded

    def clean_grad():
        with batch_stats_only(trainer.student):
            state["g"] = dict(zip(params, torch.autograd.grad(F.cross_entropy(trainer.student(xc), yc), list(params.values()))))

    def jvp():
        with batch_stats_only(trainer.student):
            trainer._target_gradient(state["before"], state["g"], inputs, state["recorded"], 0.01)

    parts = {"teacher_fwd_bwd": timed(teacher_fb, device, repeats),
             "teacher_optimiser": timed(trainer.teacher_opt.step, device, repeats),
             "student_step": timed(student_step, device, repeats), "clean_grad": timed(clean_grad, device, repeats)}
    parts["jvp"] = timed(jvp, device, repeats)
    return parts


def measure(backbone: str, width: int, size: int, ks: list[int], rounds: int, repeats: int, device: torch.device,
            names: tuple[str, ...] = ("paper", "recipe"), parts_too: bool = True) -> dict:
    configs = {name: mix for name, mix in {"paper": False, "recipe": True}.items() if name in names}
    trainers = {(c, k): make_trainer(backbone, k, width, size, mix, device) for c, mix in configs.items() for k in ks}
    rows: dict[str, list[float]] = {"plain": []}
    parts: dict[str, list[float]] = {}
    for _ in range(rounds):
        first = next(iter(trainers.values()))
        xn, yn, xc, yc = batches(first)
        rows["plain"].append(timed(lambda: plain_step(first, xn[:64], yn[:64]), device, repeats))
        for (config, k), trainer in trainers.items():
            xk, yk, _, _ = batches(trainer)
            rows.setdefault(f"{config}_k{k}", []).append(timed(lambda: trainer.meta_step(xk, yk, xc, yc, 0.05), device, repeats) / k)
        for config in configs:
            one = trainers.get((config, 1))
            if one is not None and parts_too:
                xn1, yn1, _, _ = batches(one)
                for name, value in breakdown(one, xn1, yn1, xc, yc, device, repeats).items():
                    parts.setdefault(f"{config}:{name}", []).append(value)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {"model": backbone, "image_size": size, "device": str(device), "threads": torch.get_num_threads(),
            "seconds": med, "ratio_to_plain": {k: v / med["plain"] for k, v in med.items() if k != "plain"},
            "paired_ratio_to_plain": {k: statistics.median(m / p for m, p in zip(v, rows["plain"]))
                                      for k, v in rows.items() if k != "plain"},
            "breakdown_ratio_to_plain": {k: statistics.median(v) / med["plain"] for k, v in parts.items()},
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def print_result(result: dict) -> None:
    r, b, paired = result["ratio_to_plain"], result["breakdown_ratio_to_plain"], result["paired_ratio_to_plain"]
    print(f"{result['model']}@{result['image_size']} {result['device']} threads={result['threads']} "
          f"plain={result['seconds']['plain'] * 1000:.1f} ms", flush=True)
    for config in dict.fromkeys(k.split("_k")[0] for k in r):
        steps = " ".join(f"K={k.split('_k')[1]}: {v:.2f}x (paired {paired[k]:.2f}x)" for k, v in r.items() if k.startswith(config))
        parts = " ".join(f"{k.split(':')[1]}={v:.2f}x" for k, v in b.items() if k.startswith(config))
        print(f"  {config:<6} {steps} | one-step parts: {parts}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="0: all cores")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ks", default="1,2,5,10")
    ap.add_argument("--models", default="small_cnn:32,resnet18", help="name[:width][@image_size], comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--configs", default="paper,recipe")
    ap.add_argument("--no-breakdown", action="store_true", help="time the whole steps only (more rounds per minute)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ks = [int(k) for k in args.ks.split(",")]
    results = []
    for spec in args.models.split(","):
        spec, _, size = spec.partition("@")
        name, _, width = spec.partition(":")
        results.append(measure(name, int(width or 16), int(size or 32), ks, args.rounds, args.repeats, device,
                               tuple(args.configs.split(",")), not args.no_breakdown))
        print_result(results[-1])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
