"""How images are turned into a backbone's input: size, resize, crop fraction, interpolation, mean and std.

A pretrained timm backbone brings its own (`timm.data.resolve_model_data_config`); emlc's networks and the
torchvision ones use the recipe's `data.image_size` / `data.resize` with ImageNet statistics. The choice is
written into the run's model JSON and read back by evaluate, predict and the API, so a run is always scored
on images prepared as it was trained. Torch-free."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emlc_cli.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
RESIZES = ("stretch", "crop")


@dataclass(frozen=True)
class Preprocessing:
    """`size` x `size` px from the centred `crop_pct` of the image (its shorter side's square for "crop", the whole
    image squashed for "stretch"), resampled with `interpolation`, then normalised with mean/std (0-1 scale)."""

    size: int
    resize: str = "stretch"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}


def from_timm(data_config: dict[str, Any], size: int = 0) -> Preprocessing:
    """timm's resolved data config as emlc's preprocessing; `size` (when not 0) replaces its input size."""
    height, width = data_config["input_size"][1:]
    resize = "stretch" if data_config.get("crop_mode") == "squash" else "crop"
    return Preprocessing(size or max(height, width), resize, float(data_config.get("crop_pct") or 1.0),
                         str(data_config.get("interpolation") or "bicubic"),
                         tuple(map(float, data_config["mean"])), tuple(map(float, data_config["std"])))


def from_model_config(config: dict[str, Any]) -> Preprocessing:
    """A run's model JSON (checked by check_model_config): runs from before this record get the old defaults."""
    return Preprocessing(config["input_size"], config.get("resize", "stretch"), float(config.get("crop_pct", 1.0)),
                         config.get("interpolation", "bilinear"), tuple(config.get("mean", IMAGENET_MEAN)),
                         tuple(config.get("std", IMAGENET_STD)))


def check_model_config(config: dict[str, Any], path: Path) -> None:
    """The preprocessing keys of a model JSON, where it is read: one line naming the file and key."""
    if config.get("resize", "stretch") not in RESIZES:  # absent in checkpoints from before data.resize
        raise DataError(f"key 'resize' must be 'stretch' or 'crop', got {config['resize']!r:.60}", path=path)
    crop = config.get("crop_pct", 1.0)
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0.1 <= crop <= 2.0:
        raise DataError(f"key 'crop_pct' must be a number in [0.1, 2], got {crop!r:.60}", path=path)
    if config.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise DataError(f"key 'interpolation' must be one of {', '.join(INTERPOLATIONS)}, got "
                        f"{config['interpolation']!r:.60}", path=path)
    for key in ("mean", "std"):
        value = config.get(key, IMAGENET_MEAN)
        if not (isinstance(value, list | tuple) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)) or (key == "std" and min(value) <= 0):
            raise DataError(f"key '{key}' must list 3 numbers{' above 0' if key == 'std' else ''}, got {value!r:.60}",
                            path=path)
