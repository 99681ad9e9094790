"""Everything `emlc clean` checks before torch is imported: the recipe, the --device string, --out, DATA and the
verified manifests against it. A bad input so answers in well under a second, and a --dry-run has checked what
the real run checks. Torch-free (tests/test_layout.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from emlc_cli.cache import store
from emlc_cli.prepare.advice import FROZEN, default_image_recipe, pretrained_hint
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import RecipeError
from emlc_cli.run_folder.writer import check_out_dir
from emlc_cli.recipe.schema import Recipe, load_recipe
from emlc_cli.runtime.device import is_main_process, parse_device
from emlc_cli.prepare.verified import Prepared, prepare


@dataclass
class Checked:
    """The inputs of a run, validated: what `pipeline.clean(..., prepared=)` takes without reading them again."""

    spec: SourceSpec
    recipe: Recipe
    out: Path
    prepared: Prepared
    replaces: bool = False  # --out exists and --overwrite will replace it
    resume: bool = False    # --resume, or a torchrun elastic restart of an interrupted run
    manifests: list[Path] = field(default_factory=list)  # the verified-set files, as given
    seed: int = 0
    overwrite: bool = False
    note: Optional[str] = None  # why the recipe was chosen without --recipe, or the pretrained path it did not take


def default_recipe(spec: SourceSpec) -> str:
    """features for feature vectors; for images the frozen (pretrained) recipe when its backbone is already on
    disk, else the offline default (advice.py: never an implicit download)."""
    return "features" if spec.uses_features else default_image_recipe()[0]


def _default_note(spec: SourceSpec, recipe: Union[str, Path, Recipe, None]) -> Optional[str]:
    if recipe is not None or spec.uses_features:
        return None
    chosen, why = default_image_recipe()
    return why if chosen == FROZEN else f"recipe {chosen} (a small CNN trained from scratch); {pretrained_hint(spec.command)}"


def check_clean(spec: SourceSpec, clean_csv: list[Path], recipe: Union[str, Path, Recipe, None], overrides: list[str],
                out: Optional[Path], device: str, seed: int = 0, overwrite: bool = False, resume: bool = False,
                rank_unknown: bool = False) -> Checked:
    """Validate a run's inputs in the order a person fixes them (recipe, device, output, data); nothing is written.
    `recipe`: a shipped name or YAML path (None: the default for the data), or a Recipe already resolved.
    `rank_unknown`: the launcher of one machine of several, which learns only at the rendezvous whether it holds
    rank 0 and so --out; rank 0 checks --out then."""
    resolved = _resolve_recipe(recipe, overrides, spec)
    parse_device(device)
    if store.root() is not None:
        store.max_bytes()  # EMLC_CACHE_MAX_GB, checked with the other settings
    out_dir = Path(out) if out is not None else Path("runs") / spec.run_name()
    resume = resume or elastic_restart(out_dir)
    replaces = out_dir.exists() and overwrite and not resume
    if is_main_process() and not rank_unknown:  # before any data is read; other ranks leave --out to rank 0
        named = [p for p in (*clean_csv, spec.labels_csv, recipe) if isinstance(p, (str, Path))]
        reads = [(Path(p), "the input") for p in named if Path(p).exists()]
        check_out_dir(out_dir, spec, overwrite, resume, protect=reads)
    started = time.perf_counter()
    prepared = prepare(spec, clean_csv, resolved, seed)
    prepared.seconds = time.perf_counter() - started
    return Checked(spec, resolved, out_dir, prepared, replaces, resume, list(clean_csv), seed, overwrite,
                   _default_note(spec, recipe))


def _resolve_recipe(recipe: Union[str, Path, Recipe, None], overrides: list[str], spec: SourceSpec) -> Recipe:
    if isinstance(recipe, Recipe):
        if overrides:
            raise RecipeError("overrides apply to a recipe name or file; set the fields of a Recipe object directly")
        return recipe
    return load_recipe(str(recipe) if recipe else default_recipe(spec), overrides)


def elastic_restart(out: Path) -> bool:
    """torchrun restarted the workers after a failure (`--max-restarts`): continue from the saved state as
    `--resume` would, instead of refusing the staging folder the failed attempt left."""
    import os

    from emlc_cli.run_folder.layout import STATE_FILE, staging_path

    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return restarts.isdigit() and int(restarts) > 0 and (staging_path(out) / STATE_FILE).is_file()
