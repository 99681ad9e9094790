"""`emlc demo`: clean the packaged sample, then score it (the README's third command)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from emlc_cli.student import evaluation
from emlc_cli import pipeline
from emlc_cli.data.demo import DEMO_OVERRIDES, DEMO_RECIPE, extract_demo
from emlc_cli.recipe.schema import load_recipe


def run_demo(workdir: Path, device: str = "auto", seed: int = 0, overrides: list[str] | None = None,
             on_event: pipeline.Event | None = None) -> dict[str, Any]:
    """Extract the demo set into `workdir/data`, clean it into `workdir/run`, evaluate both ways."""
    data = extract_demo(workdir / "data")
    recipe = load_recipe(DEMO_RECIPE, _merged(DEMO_OVERRIDES, overrides or []))
    result = pipeline.clean(data / "train", [data / "clean.csv"], workdir / "run", recipe, device=device, seed=seed,
                            overwrite=True, on_event=on_event)
    labels = evaluation.evaluate_truth(result.out, data / "truth.csv")
    test = evaluation.evaluate_student(result.out, data / "test", device)
    return {"run": str(result.out), "labels": labels, "test_accuracy": test["accuracy"], "summary": result.summary}


def _merged(defaults: list[str], overrides: list[str]) -> list[str]:
    """The demo's own settings, less the keys the user sets (a key may be given only once)."""
    mine = {item.split("=", 1)[0].strip() for item in overrides}
    return [*(item for item in defaults if item.split("=", 1)[0].strip() not in mine), *overrides]
