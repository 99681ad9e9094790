"""Cost against dataset size: wall time and peak memory of `emlc clean` on growing CIFAR-10 subsets.

    python benchmarks/scaling.py CIFAR_ROOT --sizes 10000,20000 train.epochs=2 meta.warmup_epochs=1 train.finetune_epochs=0
    python benchmarks/scaling.py CIFAR_ROOT --sizes 10000,50000 train.epochs=2 meta.warmup_epochs=1 train.max_steps_per_epoch=20

Each size gets its own task (make_task.py: N noisy at 50 % symmetric noise + 1,000 verified) and one
`emlc clean --recipe quick` in a fresh process; peak RSS is that process's (getrusage of a one-child wrapper).
Prints, per size, seconds, training iterations, peak RSS and the ratios to the first size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
PEAK = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def run_size(cifar: Path, noisy: int, recipe: str, overrides: list[str], work: Path) -> dict:
    task = work / f"task_{noisy}"
    subprocess.run([sys.executable, str(HERE / "make_task.py"), str(cifar), str(task), "--noisy", str(noisy)],
                   check=True, capture_output=True)
    command = [sys.executable, "-m", "emlc_cli", "clean", str(cifar / "train"), "--labels", str(task / "labels.csv"),
               "--clean", str(task / "clean.csv"), "--recipe", recipe, *overrides, "--out", str(task / "run"),
               "--device", "cpu", "-q"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, *command], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = json.loads((task / "run" / "summary.json").read_text())
    return {"noisy": noisy, "images": summary["images"], "seconds": round(seconds, 1),
            "iterations": summary["timing"]["iterations"], "peak_rss_mb": round(int(done.stdout.split()[-1]) / 1024),
            "timing": summary["timing"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cifar", type=Path)
    ap.add_argument("--sizes", default="10000,20000")
    ap.add_argument("--recipe", default="quick")
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    work = Path(tempfile.mkdtemp(prefix="emlc_scaling_"))
    rows = [run_size(args.cifar, int(n), args.recipe, args.overrides, work) for n in args.sizes.split(",")]
    first = rows[0]
    print(f"{'images':>8}{'seconds':>9}{'iterations':>12}{'peak RSS MB':>13}{'x images':>10}{'x time':>8}{'x memory':>10}")
    for r in rows:
        print(f"{r['images']:>8}{r['seconds']:>9.1f}{r['iterations']:>12.1f}{r['peak_rss_mb']:>13}"
              f"{r['images'] / first['images']:>10.2f}{r['seconds'] / first['seconds']:>8.2f}{r['peak_rss_mb'] / first['peak_rss_mb']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
