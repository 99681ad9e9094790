"""Recipes: YAML files resolved into frozen, validated dataclasses.

A recipe is data. Every key is checked: unknown keys get a did-you-mean, wrong types and
out-of-range values name the key, what was expected and what was given.
"""
from __future__ import annotations

import dataclasses
import difflib
import reprlib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from emlc_cli.models.backbones import BACKBONES, backbone
from emlc_cli.errors import RecipeError
from emlc_cli.models.pretrained import check_name, views
from emlc_cli.recipe.safe_yaml import MAX_RECIPE_BYTES  # noqa: F401 - part of this module's interface
from emlc_cli.recipe.safe_yaml import RecipeLoader as _RecipeLoader
from emlc_cli.recipe.safe_yaml import Refused as _Refused
from emlc_cli.recipe.safe_yaml import read_yaml as _read_yaml
from emlc_cli.recipe.safe_yaml import short as _short

RULE_NAMES = ("argmax", "threshold", "posterior")  # correct.rule's choices: decide/rules.RULES has one rule each


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 32
    holdout_fraction: float = 0.1
    augment: Literal["none", "flip", "crop_flip"] = "crop_flip"
    decode_workers: int = 0
    cache: Literal["auto", "device", "memory", "mmap"] = "auto"
    resize: Literal["stretch", "crop"] = "stretch"  # crop: the centred square of the shorter side, aspect kept


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small_cnn"
    width: int = 32
    weights: str = "none"
    small_stem: bool = True
    freeze_backbone: bool = False
    enhancer_hidden: int = 128
    label_embedding: int = 32
    input_size: int = 0        # a timm backbone's input size; 0: its pretrained config's (preprocessing.py)
    embed_flip: bool = False   # frozen backbone: average each image's embedding with its mirror image's


@dataclass(frozen=True)
class MetaConfig:
    steps: int = 1
    mix_clean: bool = True
    retain_weight: float = 1.0
    warmup_epochs: int = 1
    self_train_threshold: float = 0.0
    mixup_alpha: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    clean_batch_size: int = 64
    student_lr: float = 0.05
    student_momentum: float = 0.9
    weight_decay: float = 5e-4
    teacher_optimizer: Literal["adam", "sgd"] = "adam"
    teacher_lr: float = 1e-3
    teacher_momentum: float = 0.9       # the SGD teacher's momentum
    teacher_decay_factor: float = 0.1   # the Adam teacher's weight decay is weight_decay x this
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    max_steps_per_epoch: int = 0
    finetune_epochs: int = 0
    finetune_lr_factor: float = 0.1     # the fine-tune's learning rate is student_lr x this
    backbone_lr_factor: float = 1.0     # the backbone's learning rate (student and teacher) is the heads' x this
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"


@dataclass(frozen=True)
class CorrectConfig:
    rule: Literal[RULE_NAMES] = "posterior"  # the names of decide.rules.RULES
    threshold: float = 0.5
    source: Literal["student", "teacher", "ensemble"] = "student"
    cross_fit: int | Literal["auto"] = 0  # folds of out-of-sample predictions for the decision (cross_fit.py); 0: off;
    # auto: 5 folds on a small noisy pool (cross_fit.AUTO_POOL), else off
    cross_fit_verified: bool = True  # with cross_fit: the verified images are folded too, all of them check the decision


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    correct: CorrectConfig = field(default_factory=CorrectConfig)
    # Where it came from, as the user named it (`quick`, `work/my.yaml (name: quick)`, `+ train.epochs=3`): what
    # summary.json and the review report show. Not a recipe key: left out of to_dict(), recipe.yaml and --resume's check.
    origin: str = field(default="", compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("origin")
        return data


KEYS_OF_RECIPE = ("name", "description", "data", "model", "meta", "train", "correct")  # the top-level keys a YAML may hold


SECTIONS: dict[str, type] = {
    name: hint for name, hint in get_type_hints(Recipe).items() if dataclasses.is_dataclass(hint)
}
_RANGES: dict[str, tuple[float, float]] = {
    "data.image_size": (8, 1024),
    "data.holdout_fraction": (0.0, 0.9),
    "data.decode_workers": (0, 256),
    "model.width": (4, 1024),
    "model.enhancer_hidden": (4, 8192),
    "model.label_embedding": (1, 4096),
    "model.input_size": (0, 2048),
    "meta.steps": (1, 64),
    "meta.retain_weight": (0.0, 100.0),
    "meta.warmup_epochs": (0, 10_000),
    "meta.self_train_threshold": (0.0, 1.0),
    "meta.mixup_alpha": (0.0, 100.0),
    "train.epochs": (1, 100_000),
    "train.batch_size": (2, 1 << 16),
    "train.clean_batch_size": (2, 1 << 16),
    "train.student_lr": (1e-8, 10.0),
    "train.student_momentum": (0.0, 0.999),
    "train.weight_decay": (0.0, 1.0),
    "train.teacher_lr": (1e-8, 10.0),
    "train.teacher_momentum": (0.0, 0.999),
    "train.teacher_decay_factor": (0.0, 100.0),
    "train.max_steps_per_epoch": (0, 1 << 30),
    "train.finetune_epochs": (0, 10_000),
    "train.finetune_lr_factor": (1e-6, 10.0),
    "train.backbone_lr_factor": (1e-6, 10.0),
    "correct.threshold": (0.0, 1.0),
    "correct.cross_fit": (0, 20),
}


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _show(value: Any) -> str:
    """A bounded repr for messages: never the whole of a huge value."""
    return _REPR.repr(value)


def builtin_recipes_dir() -> Path:
    """The shipped recipes: `recipes/` in a checkout, `emlc_cli/recipes` in an installed wheel."""
    return Path(str(resources.files("emlc_cli.recipes")))


def builtin_recipe_names() -> list[str]:
    return sorted(p.stem for p in builtin_recipes_dir().glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise RecipeError(f"{'not a regular file' if candidate.exists() else 'file not found'}: {candidate}")
        return candidate
    builtin = builtin_recipes_dir() / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_recipe_names()
    hint = _did_you_mean(name_or_path, names)
    raise RecipeError(f"no recipe named '{name_or_path}'{hint}; shipped recipes: {', '.join(names)}")


def load_recipe(name_or_path: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A shipped recipe or a YAML file, with `section.key=value` overrides applied. An error in a value that came
    from an override names the override, not the file. `train.epochs` lowered without `meta.warmup_epochs` scales
    the file's warm-up with it (`_scale_warmup`)."""
    path = recipe_path(name_or_path)
    raw = _read_yaml(path)
    shipped = _shipped_epochs(raw)
    _refuse_repeated(overrides)
    overridden = {_apply_override(raw, override, str(path)): override.strip() for override in overrides}
    scaled = _scale_warmup(raw, overridden, shipped)
    raw.setdefault("name", path.stem)
    try:
        recipe = recipe_from_dict(raw, source=str(path))
    except RecipeError as err:
        raise _blame(err, overridden) from None
    return dataclasses.replace(recipe, origin=_origin(name_or_path, path, raw, [*overridden.values(), *scaled]))


def _origin(given: str, path: Path, raw: dict[str, Any], overrides: list[str]) -> str:
    """`quick`, `work/my.yaml (name: quick)`, each with `+ KEY=VALUE ...` when overridden."""
    label = given
    if path.parent != builtin_recipes_dir() and str(raw.get("name")) != path.stem:
        label = f"{given} (name: {raw.get('name')})"
    return " ".join([label, "+", *overrides]) if overrides else label


def _shipped_epochs(raw: dict[str, Any]) -> tuple[Any, Any]:
    """train.epochs and meta.warmup_epochs as the file has them (before overrides), to scale a warm-up."""
    section = lambda name: raw.get(name) if isinstance(raw.get(name), dict) else {}  # noqa: E731
    return section("train").get("epochs", TrainConfig.epochs), section("meta").get("warmup_epochs", MetaConfig.warmup_epochs)


def _scale_warmup(raw: dict[str, Any], overridden: dict[str, str], shipped: tuple[Any, Any]) -> list[str]:
    """train.epochs lowered on the command line, meta.warmup_epochs not given: the warm-up keeps the file's share of
    the epochs (rounded half up, at least 1, at most epochs - 1), so `--recipe quick train.epochs=3` runs (warm-up 2 of 3).
    Returns the origin's note of the scaled key, or nothing when nothing was scaled."""
    old_epochs, warmup = shipped
    epochs = raw["train"].get("epochs") if "train.epochs" in overridden else None
    if "meta.warmup_epochs" in overridden or not all(type(v) is int for v in (epochs, old_epochs, warmup)) \
            or not 0 < epochs < old_epochs:
        return []
    share = min(warmup, epochs - 1, max(1, (2 * warmup * epochs + old_epochs) // (2 * old_epochs)))
    if share == warmup:
        return []
    raw.setdefault("meta", {})["warmup_epochs"] = share
    return [f"meta.warmup_epochs={share} (scaled with train.epochs)"]


def _blame(err: RecipeError, overridden: dict[str, str]) -> RecipeError:
    """Re-word an error about a key set on the command line so that it names the override."""
    if err.key not in overridden:
        return err
    blamed = RecipeError(err.detail, source=f"override {overridden[err.key]} (command line)")
    blamed.key = err.key
    return blamed


def recipe_from_dict(raw: dict[str, Any], source: str | None = None) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError("the top level must be a mapping of sections", source=source)
    _check_keys(raw, list(KEYS_OF_RECIPE), prefix="", source=source)
    sections = {}
    for name, cls in SECTIONS.items():
        section = {} if raw.get(name) is None else raw[name]  # `train:` alone means the defaults; `train: []` is an error
        if not isinstance(section, dict):
            raise RecipeError(f"expected a mapping of keys, got {type(section).__name__} ({_show(section)})", key=name, source=source)
        sections[name] = _build_section(cls, section, name, source)
    top = {k: _coerce(raw[k], str, k, source) for k in ("name", "description") if raw.get(k) is not None}
    recipe = Recipe(**top, **sections)
    _check_consistency(recipe, source)
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def _refuse_repeated(overrides: list[str] | tuple[str, ...]) -> None:
    """The same key given twice is refused: silently keeping the last one hides a typo in a long command line."""
    seen: set[str] = set()
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in seen:
            raise RecipeError("override given twice; give each key once", key=_short(key))
        seen.add(key)


def _apply_override(raw: dict[str, Any], override: str, source: str | None = None) -> str:
    """Set one `section.key=value` in `raw`; returns the key."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise RecipeError(f"override '{_short(override)}' must look like section.key=value (e.g. train.epochs=3)")
    section, _, name = key.partition(".")
    if section not in SECTIONS:
        raise RecipeError(f"unknown section{_did_you_mean(section, list(SECTIONS))}", key=_short(key))
    target = raw.get(section)
    if target is None:
        target = raw[section] = {}
    if not isinstance(target, dict):
        raise RecipeError(f"expected a mapping of keys, got {type(target).__name__} ({_show(target)}); "
                          f"cannot apply {_short(key)}", key=section, source=source)
    target[name] = _override_value(text, key)
    return key


def _override_value(text: str, key: str) -> Any:
    if not text.strip():
        return ""
    try:
        value = yaml.load(text, Loader=_RecipeLoader)
    except _Refused as err:
        raise RecipeError(f"override value: {err.problem}", key=_short(key)) from None
    except yaml.YAMLError:
        return text
    # no recipe key takes a mapping: `local-dir:` or `hf-hub:` with nothing after it is a (bad) name, not {key: None}
    return text.strip() if isinstance(value, dict) else value


def _check_keys(given: dict[str, Any], allowed: list[str], prefix: str, source: str | None) -> None:
    for key in given:
        if key not in allowed:
            hint = _did_you_mean(_short(str(key), 200), allowed)
            raise RecipeError(f"unknown key{hint}; valid keys: {', '.join(allowed)}", key=_short(f"{prefix}{key}"), source=source)


def _build_section(cls: type, values: dict[str, Any], section: str, source: str | None) -> Any:
    _check_keys(values, [f.name for f in fields(cls)], prefix=f"{section}.", source=source)
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        kwargs[name] = _coerce(value, hints[name], key, source)
        _check_range(key, kwargs[name], source)
    return cls(**kwargs)


def _coerce(value: Any, expected: Any, key: str, source: str | None) -> Any:
    if get_origin(expected) in (Union, UnionType):
        return _coerce_either(value, get_args(expected), key, source)
    if get_origin(expected) is Literal:
        choices = get_args(expected)
        if value not in choices:
            hint = _did_you_mean(_short(str(value), 200), [str(c) for c in choices]) if isinstance(value, str) else ""
            raise RecipeError(f"got {_show(value)}{hint}; expected one of: {', '.join(map(str, choices))}", key=key, source=source)
        return value
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _is_number(value):  # YAML 1.1 reads 1e-3 as a string
            return float(value)
    elif expected is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise RecipeError(f"expected {expected.__name__}, got {type(value).__name__} ({_show(value)})", key=key, source=source)


def _coerce_either(value: Any, options: tuple[Any, ...], key: str, source: str | None) -> Any:
    """The first of `options` (e.g. int | Literal["auto"]) that takes the value."""
    for option in options:
        try:
            return _coerce(value, option, key, source)
        except RecipeError:
            continue
    names = [", ".join(map(str, get_args(o))) if get_origin(o) is Literal else f"an {o.__name__}" for o in options]
    raise RecipeError(f"expected {' or '.join(names)}, got {type(value).__name__} ({_show(value)})", key=key, source=source)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_range(key: str, value: Any, source: str | None) -> None:
    if key not in _RANGES or isinstance(value, str):  # a word such as `auto`, checked by its Literal
        return
    low, high = _RANGES[key]
    if not low <= value <= high:
        raise RecipeError(f"expected a value in [{low:g}, {high:g}], got {value!r}", key=key, source=source)


def _check_consistency(recipe: Recipe, source: str | None) -> None:
    steps, batch = recipe.meta.steps, recipe.train.batch_size
    if batch % steps:
        raise RecipeError(
            f"train.batch_size={batch} must be divisible by meta.steps={steps} (the noisy batch is split into K chunks)",
            key="meta.steps", source=source,
        )
    model = recipe.model
    for name in views(model.backbone):
        if name not in BACKBONES:
            check_name(name, source)
    if len(views(model.backbone)) > 1 and not model.freeze_backbone:
        raise RecipeError(f"several backbones ({model.backbone}) are concatenated embeddings: they need "
                          "model.freeze_backbone: true (the frozen recipe)", key="model.backbone", source=source)
    if model.freeze_backbone and (backbone(model.backbone).takes_features or model.weights in ("none", "")):
        raise RecipeError(f"needs a pretrained image backbone (model.backbone={model.backbone}, model.weights={model.weights}): "
                          "set model.weights to pretrained (timm or torchvision), a torchvision weight name or a local file",
                          key="model.freeze_backbone", source=source)
    if recipe.correct.cross_fit == 1:
        raise RecipeError("expected 0 (off) or 2 or more folds, got 1", key="correct.cross_fit", source=source)
    if recipe.meta.warmup_epochs >= recipe.train.epochs:
        raise RecipeError(
            f"must be smaller than train.epochs={recipe.train.epochs}", key="meta.warmup_epochs", source=source
        )


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
