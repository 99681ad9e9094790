"""Rerun quality_matrix.py's kept `frozen` runs with another recipe (or overrides) and score both against the truth.

Each WORK/CELL/frozen_NAME run folder records the command that made it (source.json); this script runs that
command again with --recipe and --out replaced and the overrides appended, so the embeddings come from the store
(nothing is embedded) and only the heads, the decision and the estimate are new. One line per cell: the kept run
and the variant, side by side.

    python benchmarks/frozen_variants.py /tmp/pre2 st95 /tmp/snapN/recipes/frozen.yaml \
        --cells real40-10k-s0:lite0+lite2,real40-3k-s0:lite0 --emlc-pythonpath /tmp/snapN [-- --seed 1 KEY=VALUE]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def scored(run: Path, truth: dict[str, str]) -> str:
    rows = [r for r in csv.DictReader((run / "corrected.csv").open()) if r["split"] == "noisy"]
    given = sum(r["label"] == truth[r["path"]] for r in rows) / len(rows)
    corrected = sum(r["corrected_label"] == truth[r["path"]] for r in rows) / len(rows)
    changed = [r for r in rows if r["label"] != r["corrected_label"]]
    right = sum(r["label"] != truth[r["path"]] for r in changed)
    wrong = sum(r["label"] != truth[r["path"]] for r in rows)
    precision, recall = right / max(1, len(changed)), right / max(1, wrong)
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    accuracy = json.loads((run / "summary.json").read_text()).get("label_accuracy") or {}
    estimate = [(accuracy.get(k) or {}).get("estimate") for k in ("given", "corrected")]
    shown = " -> ".join("?" if e is None else f"{e:.3f}" for e in estimate)
    return (f"given {given:.4f} corrected {corrected:.4f} ({corrected - given:+.4f}) changes {len(changed)} "
            f"P {precision:.2f} F1 {f1:.3f} est {shown}")


def rerun(work: Path, cell: str, name: str, tag: str, recipe: str, extra: list[str], pythonpath: str | None) -> None:
    kept = work / cell / f"frozen_{name}"
    command = shlex.split(json.loads((kept / "source.json").read_text())["command"])[1:]
    out = work / cell / f"frozen_{name}_{tag}"
    command[command.index("--recipe") + 1], command[command.index("--out") + 1] = recipe, str(out)
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "emlc_cli", *command, *extra], env=env, capture_output=True, text=True)
    if done.returncode:
        print(f"{cell} {name}: failed: {done.stderr.strip()[-300:]}", flush=True)
        return
    truth = {r["path"]: r["label"] for r in csv.DictReader((work / cell / "truth.csv").open())}
    print(f"{cell} {name} | kept: {scored(kept, truth)} | {tag}: {scored(out, truth)} | "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="quality_matrix.py's work folder")
    parser.add_argument("tag", help="the variant's name: runs go to CELL/frozen_NAME_TAG")
    parser.add_argument("recipe", help="the variant's recipe (a name or a YAML file)")
    parser.add_argument("--cells", required=True, help="comma-separated CELL:NAME, e.g. real40-10k-s0:lite0+lite2")
    parser.add_argument("--emlc-pythonpath", help="run emlc from this checkout (PYTHONPATH)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)  # after --: more arguments for emlc clean (--seed N, overrides)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1:]
    for item in args.cells.split(","):
        cell, _, name = item.partition(":")
        rerun(args.work, cell, name, args.tag, args.recipe, extra, args.emlc_pythonpath)


if __name__ == "__main__":
    main()
