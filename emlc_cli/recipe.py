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
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from emlc_cli.backbones import backbone
from emlc_cli.corrections import RULE_NAMES
from emlc_cli.errors import RecipeError


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 32
    holdout_fraction: float = 0.1
    augment: Literal["none", "flip", "crop_flip"] = "crop_flip"
    decode_workers: int = 0
    cache: Literal["auto", "device", "memory", "mmap"] = "auto"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small_cnn"
    width: int = 32
    weights: str = "none"
    small_stem: bool = True
    freeze_backbone: bool = False
    enhancer_hidden: int = 128
    label_embedding: int = 32


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
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"


@dataclass(frozen=True)
class CorrectConfig:
    rule: Literal[RULE_NAMES] = "posterior"  # the names of corrections.RULES
    threshold: float = 0.5
    source: Literal["student", "teacher", "ensemble"] = "student"


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    correct: CorrectConfig = field(default_factory=CorrectConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    "correct.threshold": (0.0, 1.0),
}


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes; anything near this is not one
MAX_DEPTH = 16  # sections hold scalars: deeper nesting is never a valid recipe


class _Refused(yaml.YAMLError):
    """A YAML construct recipes do not allow; `mark` says where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (a 1 KB alias bomb expands to gigabytes), deep nesting or duplicate keys."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("YAML anchors and aliases (&name, *name) are not allowed in recipes", event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise _Refused(f"key '{_short(key_node.value)}' appears twice in one mapping", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
    path = recipe_path(name_or_path)
    raw = _read_yaml(path)
    _refuse_repeated(overrides)
    for override in overrides:
        _apply_override(raw, override, str(path))
    raw.setdefault("name", path.stem)
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: dict[str, Any], source: str | None = None) -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError("the top level must be a mapping of sections", source=source)
    _check_keys(raw, [f.name for f in fields(Recipe)], prefix="", source=source)
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


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(_read_text(path), Loader=_RecipeLoader)
    except _Refused as err:
        raise RecipeError(f"{_at(err.mark)}{err.problem}", source=str(path)) from None
    except yaml.MarkedYAMLError as err:
        raise RecipeError(f"YAML syntax error at {_at(err.problem_mark)}{err.problem}", source=str(path)) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"cannot read: {_short(str(err), 200)}", source=str(path)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError("the top level must be a mapping of sections", source=str(path))
    return raw


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECIPE_BYTES + 1)
        if len(data) > MAX_RECIPE_BYTES:
            raise RecipeError(f"larger than {MAX_RECIPE_BYTES >> 20} MiB; a recipe is a short YAML file", source=str(path))
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read: {_short(str(err), 200)}", source=str(path)) from None


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def _refuse_repeated(overrides: list[str] | tuple[str, ...]) -> None:
    """The same key given twice is refused: silently keeping the last one hides a typo in a long command line."""
    seen: set[str] = set()
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in seen:
            raise RecipeError("override given twice; give each key once", key=_short(key))
        seen.add(key)


def _apply_override(raw: dict[str, Any], override: str, source: str | None = None) -> None:
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


def _override_value(text: str, key: str) -> Any:
    if not text.strip():
        return ""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except _Refused as err:
        raise RecipeError(f"override value: {err.problem}", key=_short(key)) from None
    except yaml.YAMLError:
        return text


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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_range(key: str, value: Any, source: str | None) -> None:
    if key not in _RANGES:
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
    if model.freeze_backbone and (backbone(model.backbone).takes_features or model.weights in ("none", "")):
        raise RecipeError(f"needs a pretrained image backbone (model.backbone={model.backbone}, model.weights={model.weights}): "
                          "set model.weights to a torchvision weight name or a local file", key="model.freeze_backbone", source=source)
    if recipe.meta.warmup_epochs >= recipe.train.epochs:
        raise RecipeError(
            f"must be smaller than train.epochs={recipe.train.epochs}", key="meta.warmup_epochs", source=source
        )


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
