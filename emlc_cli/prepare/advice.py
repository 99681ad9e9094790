"""Leading users to the pretrained path: which recipe `emlc clean IMAGES` runs without --recipe, and the exact
command that runs the `frozen` recipe instead. Torch-free, and never a download: the frozen recipe is the default
only when its backbone is already in the Hugging Face cache (or a local folder)."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Optional

FROZEN = "frozen"
OFFLINE_DEFAULT = "default"
RECIPE_OPTIONS = ("--recipe", "-r")
OUT_OPTIONS = ("--out", "-o")
OVERRIDE = re.compile(r"[a-z_]+\.[a-z_]+=.*")


def hub_cache() -> Path:
    """huggingface_hub's cache folder, read from the environment now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def backbone_on_disk(name: str) -> bool:
    """The backbone's weights are here without a download: a local-dir: folder, or the Hub repo (hf-hub:ORG/NAME;
    timm's registry names are hosted as timm/NAME) cached with a snapshot holding model.safetensors."""
    if name.startswith("local-dir:"):
        return (Path(name[len("local-dir:"):]).expanduser() / "model.safetensors").is_file()
    repo = name[len("hf-hub:"):].partition("@")[0] if name.startswith("hf-hub:") else f"timm/{name.removeprefix('timm:')}"
    folder = hub_cache() / f"models--{repo.replace('/', '--')}"
    try:
        commit = (folder / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(commit) and (folder / "snapshots" / commit / "model.safetensors").is_file()


def default_image_recipe() -> tuple[str, Optional[str]]:
    """(recipe, why): `frozen` when its backbone needs no download, else today's offline default."""
    from emlc_cli.recipe.schema import load_recipe

    backbone = load_recipe(FROZEN).model.backbone
    if backbone_on_disk(backbone):
        return FROZEN, f"recipe {FROZEN}: its pretrained backbone {backbone} is in the Hugging Face cache"
    return OFFLINE_DEFAULT, None


def frozen_command(command: Optional[str], out: Optional[Path] = None) -> str:
    """`command` (an `emlc clean` line) with --recipe frozen instead of its recipe and recipe overrides, writing
    beside its run folder (`out`, or its --out) as NAME-frozen rather than over it."""
    words = shlex.split(command) if command else ["emlc", "clean", "DATA", "--clean", "CSV"]
    kept, skip = [], None
    for word in words:
        if skip == "out":
            out = Path(word)
        if skip:
            skip = None
        elif word in RECIPE_OPTIONS or word in OUT_OPTIONS:
            skip = "out" if word in OUT_OPTIONS else "recipe"
        elif not OVERRIDE.fullmatch(word) and not word.startswith(tuple(f"{o}=" for o in RECIPE_OPTIONS + OUT_OPTIONS)):
            kept.append(word)
    beside = ["--out", str(out.with_name(f"{out.name}-{FROZEN}"))] if out is not None else []
    return shlex.join([*kept, *beside, "--recipe", FROZEN])


def pretrained_hint(command: Optional[str], out: Optional[Path] = None) -> str:
    """What to run for a pretrained backbone, and what it downloads."""
    return (f"a pretrained backbone usually corrects far more: {frozen_command(command, out)} (downloads DINOv2 "
            "ViT-S/14, 88 MB, once; offline, add model.backbone=local-dir:DIR)")


def downloads(backbone: str, weights: str) -> str:
    """What a recipe's backbone downloads on first use, and whether it is here already."""
    if weights in ("none", "") or Path(weights).suffix in (".pt", ".pth", ".safetensors") or backbone.startswith("local-dir:"):
        return "nothing"
    if backbone.startswith(("hf-hub:", "timm:")) or "." in backbone:
        repo = backbone[len("hf-hub:"):] if backbone.startswith("hf-hub:") else f"timm/{backbone.removeprefix('timm:')}"
        here = "cached here" if backbone_on_disk(backbone) else "not cached here"
        return f"{repo} from the Hugging Face Hub, once (HF_HOME; {here})"
    return f"{backbone} {weights} weights through torchvision, once (TORCH_HOME)"


def recipe_cost(path: Path) -> str:
    """The `# cost:` comment line of a recipe file ('' when it has none)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# cost:"):
            return line[len("# cost:"):].strip()
    return ""
