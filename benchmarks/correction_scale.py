"""The correction step at scale (issue 16, item 4): EM for the noise transition and the guarded decision on N
synthetic calibrated predictions of C classes, time and peak memory. Run on a quiet machine:

    python benchmarks/correction_scale.py --rows 1000000 --classes 100

The probabilities are generated in a first process and memory-mapped by the measured one, so its peak RSS is
the step's own working memory plus the (shared, file-backed) probabilities."""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make(folder: Path, rows: int, classes: int, noise: float = 0.2, block: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, classes, rows)
    probs = np.lib.format.open_memmap(folder / "probs.npy", mode="w+", dtype=np.float32, shape=(rows, classes))
    for start in range(0, rows, block):
        logits = rng.normal(0, 1, (min(block, rows - start), classes)).astype(np.float32)
        logits[np.arange(len(logits)), true[start:start + len(logits)]] += 5
        logits = np.exp(logits - logits.max(1, keepdims=True))
        probs[start:start + len(logits)] = logits / logits.sum(1, keepdims=True)
    probs.flush()
    np.save(folder / "true.npy", true)
    np.save(folder / "given.npy", np.where(rng.random(rows) < noise, rng.integers(0, classes, rows), true))


def measure(folder: Path) -> None:
    from emlc_cli.decide import rules as corrections, evidence

    probs = np.load(folder / "probs.npy", mmap_mode="r")
    given, true = np.load(folder / "given.npy"), np.load(folder / "true.npy")
    holdout_probs, holdout = np.array(probs[:1000]), true[:1000]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.perf_counter()
    em = corrections.estimate_transition(probs, given, probs.shape[1])
    em_seconds = time.perf_counter() - started
    judged = evidence.judge(probs, given, holdout_probs, holdout, holdout, holdout, holdout, em)
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{len(given)} rows x {probs.shape[1]} classes: EM {em_seconds:.1f} s, EM + guarded decision {total:.1f} s; "
          f"peak RSS {peak:.2f} GB ({before:.2f} GB before the step); labels changed {int((judged.labels != given).sum())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(args.measure)
    with tempfile.TemporaryDirectory() as folder:
        make(Path(folder), args.rows, args.classes)
        subprocess.run([sys.executable, __file__, "--measure", folder], check=True)


if __name__ == "__main__":
    main()
