"""`emlc demo`: the embedded default, offline, about two minutes on 2 CPU cores."""
from __future__ import annotations

import tempfile
from pathlib import Path

from emlc_cli.cli.options import DeviceOpt, OutOpt, OverridesArg, QuietOpt, SeedOpt

EXAMPLES = """[bold]Examples[/]

  emlc demo                       # about two minutes on 2 CPU cores
  emlc demo --out runs/demo       # keep the run folder (then: emlc review runs/demo)
  emlc demo train.epochs=4 meta.warmup_epochs=1   # a shorter run"""


def demo_command(out: OutOpt = None, overrides: OverridesArg = None, device: DeviceOpt = "auto",
                 seed: SeedOpt = 0, quiet: QuietOpt = False) -> None:
    """Clean the packaged CIFAR-10 sample (4 classes, 40 % noisy labels) and print label accuracy before and after."""
    from emlc_cli.cli import console
    from emlc_cli.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="emlc-demo-") as scratch:
        workdir = out or Path(scratch)
        with console.TrainingProgress(quiet) as progress:
            result = run_demo(workdir, device, seed, overrides or [], on_event=progress)
        labels = result["labels"]
        console.metrics_table("emlc demo (2,000 noisy + 200 verified CIFAR-10 images, 4 classes)", {
            "label accuracy before": labels["noisy_given_accuracy"],
            "label accuracy after": labels["noisy_corrected_accuracy"],
            "estimated without the truth": _estimate(result["summary"]),
            "noise detection F1": labels["f1"],
            "student test accuracy": result["test_accuracy"],
            "run folder": result["run"] if out else "(temporary; pass --out DIR to keep it)",
        })


def _estimate(summary: dict) -> str:
    estimate = summary.get("label_accuracy")
    if not estimate or estimate.get("given") is None:
        return estimate["source"] if estimate else "(the posterior rule gives it)"
    return f"{estimate['given']['estimate']:.4f} -> {estimate['corrected']['estimate']:.4f}"
