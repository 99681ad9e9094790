"""The whole `emlc clean` and `emlc push --to` at 100k-1M images (issue 16, item 7): each phase's seconds and
time per image, and peak RSS, on the generated 32-px folders of benchmarks/scale.py (written once, reused).

    python benchmarks/pipeline_scale.py --work /tmp/scale --sizes 100000 300000 1000000
    python benchmarks/pipeline_scale.py --work /tmp/scale --sizes 100000 1000000 --nproc 2 --no-push

Every size gets labels.csv (the folder's classes with --rate symmetric noise) and clean.csv (--verified images
with their true labels), then one `emlc clean --recipe quick` in a fresh process with a fixed number of training
steps (the overrides below: the steps cost the same at every size, and their cost per image is measured in
benchmarks/scaling.py), so what grows with the image count shows: validation, decode, prediction and the
decision (`corrections`), outputs, and the push. The image store starts empty for each size. Run it alone."""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale  # noqa: E402  (the generated folders)
from make_task import _write  # noqa: E402  (a path,label CSV)
from scaling import PEAK  # noqa: E402  (a one-child wrapper printing the child's peak RSS)

FIXED_STEPS = ["train.epochs=2", "meta.warmup_epochs=1", "train.max_steps_per_epoch=20", "train.finetune_epochs=0"]
PHASES = ("validation", "decode", "training", "corrections", "outputs")


def write_task(folder: Path, task: Path, rate: float, verified: int) -> float:
    """labels.csv and clean.csv for `folder` (class = folder name = truth); the given labels' accuracy."""
    from emlc_cli.data import noise
    from emlc_cli.data.imagefolder import load_image_folder

    ds = load_image_folder(folder)
    given = noise.symmetric(ds.labels, len(ds.classes), rate, 0)
    pick = np.random.default_rng(1).choice(len(ds), size=verified, replace=False)  # not seed 0: the flips
    given[pick] = ds.labels[pick]  # the verified images filed under their true class
    task.mkdir(parents=True, exist_ok=True)
    _write(task / "labels.csv", ds.paths, [ds.classes[g] for g in given])
    _write(task / "clean.csv", [ds.paths[i] for i in pick], [ds.classes[ds.labels[i]] for i in pick])
    return float((given == ds.labels).mean())


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one command in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, int(done.stdout.split()[-1]) / 2**20


def task_folder(work: Path, size: int, nproc: int) -> Path:
    return work / (f"pipeline-{size}" if nproc == 1 else f"pipeline-{size}-nproc{nproc}")


def run_size(work: Path, size: int, rate: float, verified: int, overrides: list[str], nproc: int = 1,
             push: bool = True) -> dict:
    folder, task = work / f"images-{size}", task_folder(work, size, nproc)
    given = write_task(folder, task, rate, verified)
    subprocess.run(["rm", "-rf", str(task / "run"), str(task / "pushed"), str(task / "store")], check=True)
    env = {**os.environ, "EMLC_CACHE_DIR": str(task / "store"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if nproc > 1:  # emlc's --nproc gives each process its share of the cores
        env.pop("OMP_NUM_THREADS")
    clean = [sys.executable, "-m", "emlc_cli", "clean", str(folder), "--labels", str(task / "labels.csv"), "--clean",
             str(task / "clean.csv"), "--recipe", "quick", *FIXED_STEPS, *overrides, "--out", str(task / "run"), "-q",
             *(["--nproc", str(nproc)] if nproc > 1 else [])]
    clean_s, clean_rss = timed(clean, env)
    push_s, push_rss = timed([sys.executable, "-m", "emlc_cli", "push", str(task / "run"), "--to", str(task / "pushed"),
                              "-q"], env) if push else (0.0, 0.0)
    summary = json.loads((task / "run" / "summary.json").read_text())
    timing = {**summary["timing"], "validation": summary["validation_seconds"]}  # validated before the run's clock
    return {"images": size, "given": given, "clean_s": clean_s, "clean_rss_gb": clean_rss, "push_s": push_s,
            "push_rss_gb": push_rss, "timing": timing, "changed": summary["changed"],
            "corrected": _corrected_accuracy(task / "run" / "corrected.csv"),
            "pushed_mb": sum(f.stat().st_size for f in (task / "pushed").rglob("*") if f.is_file()) / 2**20 if push else 0.0}


def _corrected_accuracy(corrected_csv: Path) -> float:
    """The generated images' class is their folder's name."""
    with corrected_csv.open(newline="") as handle:
        rows = [(r["path"].split("/")[0], r["corrected_label"]) for r in csv.DictReader(handle)]
    return float(np.mean([folder == label for folder, label in rows]))


def row(r: dict) -> str:
    t, n = r["timing"], r["images"]
    cells = [f"{t.get(p, 0.0):.1f} s ({t.get(p, 0.0) / n * 1e6:.0f})" for p in PHASES]
    return (f"| {n:,} | " + " | ".join(cells) + f" | {r['clean_s']:.0f} s ({r['clean_s'] / n * 1e6:.0f}) | "
            f"{r['clean_rss_gb']:.2f} GB | {r['push_s']:.0f} s ({r['push_s'] / n * 1e6:.0f}), {r['pushed_mb']:.0f} MB | "
            f"{r['push_rss_gb']:.2f} GB | {r['changed']:,}: {r['given']:.3f} -> {r['corrected']:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/emlc-scale"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--rate", type=float, default=0.2, help="symmetric noise in labels.csv")
    ap.add_argument("--verified", type=int, default=1000)
    ap.add_argument("--nproc", type=int, default=1, help="emlc clean --nproc N (torchrun, gloo on CPU)")
    ap.add_argument("--no-push", action="store_true", help="skip emlc push --to")
    ap.add_argument("overrides", nargs="*", help="more recipe overrides, key=value")
    args = ap.parse_args()
    largest = max(args.sizes)
    scale.generate(args.work / f"images-{largest}", largest)
    print("seconds (us per image) per phase of `emlc clean`, from its summary.json timing; then `emlc push --to`")
    print(f"| images | {' | '.join(PHASES)} | clean, whole process | clean peak RSS | push --to | push peak RSS | changed: label accuracy |")
    print("|" + "---|" * (len(PHASES) + 6))
    for size in sorted(args.sizes):
        if size != largest:
            scale.linked(args.work / f"images-{largest}", args.work / f"images-{size}", size)
        result = run_size(args.work, size, args.rate, args.verified, args.overrides, args.nproc, not args.no_push)
        (task_folder(args.work, size, args.nproc) / "result.json").write_text(json.dumps(result, indent=1))
        print(row(result), flush=True)


if __name__ == "__main__":
    main()
