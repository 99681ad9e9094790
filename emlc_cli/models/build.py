"""Networks: backbones built from the table in backbones.py or from torchvision, the teacher (backbone +
classifier + enhancer) and the student."""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from emlc_cli.models import pretrained
from emlc_cli.models.backbones import BACKBONES, TIMM, Backbone, backbone as table_traits
from emlc_cli.errors import RecipeError
from emlc_cli.models.pretrained import check_known, is_timm_model, locate, views
from emlc_cli.preprocessing import Preprocessing, from_timm

log = logging.getLogger(__name__)
RESNETS = ("resnet18", "resnet34", "resnet50")


@contextlib.contextmanager
def batch_stats_only(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm on batch statistics without touching the running statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


class Classifier(nn.Module):
    """Backbone -> features -> logits. forward returns logits; `features_and_logits` both."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return features, self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class Enhancer(nn.Module):
    """MLP over [features, embedding(given label)] -> retain weight w in (0, 1)."""

    def __init__(self, feature_dim: int, num_classes: int, hidden: int, embedding: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embedding)
        self.mlp = nn.Sequential(nn.Linear(feature_dim + embedding, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        joint = torch.cat([features, self.embed(labels)], dim=-1)
        return torch.sigmoid(self.mlp(joint)).squeeze(-1)


class Teacher(nn.Module):
    def __init__(self, classifier: Classifier, enhancer: Enhancer) -> None:
        super().__init__()
        self.classifier = classifier
        self.enhancer = enhancer


def traits(name: str) -> Backbone:
    """The table's traits, and timm's for every name timm builds (registry names included: backbones.backbone
    alone sees only the prefixed ones, torch-free)."""
    return TIMM if name not in BACKBONES and is_timm_model(name) else table_traits(name)


@dataclass(frozen=True)
class ImageInput:
    """How a trained (not frozen) backbone sees images, and, for a timm network, what rebuilds it offline from
    the run folder (`timm`: architecture and create_model's kwargs, recorded in the model JSON)."""

    preprocessing: Preprocessing
    timm: dict[str, Any] | None = None


def image_input(name: str, weights: str, input_size: int, image_size: int, resize: str) -> ImageInput:
    """A timm backbone's own preprocessing (its pretrained config, at `input_size` when not 0); the recipe's
    `data.image_size` / `data.resize` with ImageNet statistics for emlc's and torchvision's networks."""
    if name in BACKBONES or not is_timm_model(name):
        return ImageInput(Preprocessing(image_size, resize))
    located = locate(name, weights or "none")
    preprocessing = from_timm(pretrained.data_config(located), input_size)
    return ImageInput(preprocessing, {"architecture": located.architecture,
                                      "kwargs": pretrained.model_kwargs(located, input_size)})


def build_backbone(name: str, width: int = 16, small_stem: bool = True, weights: str = "none",
                   in_features: int = 0, input_size: int = 0) -> tuple[nn.Module, int]:
    """A feature extractor and its output width: a backbone of the table (backbones.py; mlp takes feature
    vectors and needs in_features), a timm model (its weights located as pretrained.py says, at `input_size`
    when not 0), or any torchvision classification model."""
    known = BACKBONES.get(name)
    if known is not None and known.build is not None:
        net = known.build(width, in_features)
        _load_local_weights(net, weights)
        return net, net.out_features
    if is_timm_model(name):
        net, _ = pretrained.build(locate(name, weights or "none"), input_size)
        return net, int(net.num_features)
    net = _torchvision_model(name, weights)
    dim = _strip_classifier(net, name)
    if small_stem and name.startswith("resnet"):
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    if Path(weights).suffix in (".pt", ".pth", ".safetensors"):
        _load_local_weights(net, weights)
    return net, dim


def build_classifier(name: str, num_classes: int, width: int = 16, small_stem: bool = True, weights: str = "none",
                     in_features: int = 0, input_size: int = 0) -> Classifier:
    backbone, dim = build_backbone(name, width, small_stem, weights, in_features, input_size)
    return Classifier(backbone, dim, num_classes)


def rebuild_timm_classifier(record: dict[str, Any], num_classes: int) -> Classifier:
    """A run's fine-tuned timm classifier from its model JSON's `timm` record (weights loaded by the caller; no
    download)."""
    net = pretrained.rebuild(record["architecture"], record["kwargs"])
    return Classifier(net, int(net.num_features), num_classes)


def build_teacher(name: str, num_classes: int, width: int, small_stem: bool, weights: str, hidden: int, embedding: int,
                  in_features: int = 0, input_size: int = 0) -> Teacher:
    classifier = build_classifier(name, num_classes, width, small_stem, weights, in_features, input_size)
    return Teacher(classifier, Enhancer(classifier.feature_dim, num_classes, hidden, embedding))


def validate_backbone(name: str, weights: str, fetch: bool = True) -> None:
    """Fail before any data is read if the backbone or its weights cannot be resolved. `fetch=False` leaves a
    Hub model's files unlooked-for (the name is checked against timm's registry only)."""
    if len(views(name)) > 1:
        for view in views(name):
            validate_backbone(view, weights, fetch)
        return
    if name in BACKBONES:
        if weights not in ("none", "") and not Path(weights).is_file():
            raise RecipeError(f"{name} takes 'none' or a local state-dict file, got '{weights}'", key="model.weights")
        if weights not in ("none", ""):
            read_state_dict(Path(weights))  # refused now, before any data is read
        return
    if is_timm_model(name):
        if weights not in ("pretrained", "none", ""):
            raise RecipeError(f"a timm backbone takes pretrained or none, got '{weights}'; give weights of your own "
                              "as a folder: model.backbone=local-dir:DIR (timm.models.save_for_hf)", key="model.weights")
        if fetch or name.startswith("local-dir:"):
            locate(name, weights or "none")  # found (or downloaded once) now, before any data is read
        else:
            check_known(name)
        return
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available + list(BACKBONES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RecipeError(f"unknown backbone '{name}'{hint}; use small_cnn, a torchvision or timm model name, "
                          "hf-hub:ORG/NAME or local-dir:PATH", key="model.backbone")
    _resolve_weights_enum(name, weights)
    if Path(weights).suffix in (".pt", ".pth", ".safetensors"):
        read_state_dict(Path(weights))


def _torchvision_model(name: str, weights: str) -> nn.Module:
    import torchvision

    enum = _resolve_weights_enum(name, weights)
    return torchvision.models.get_model(name, weights=enum)


def _resolve_weights_enum(name: str, weights: str) -> object | None:
    if weights in ("none", "") or Path(weights).suffix in (".pt", ".pth", ".safetensors"):
        if weights not in ("none", "") and not Path(weights).is_file():
            raise RecipeError(f"weights file not found: {weights}", key="model.weights")
        return None
    import torchvision

    enum_cls = torchvision.models.get_model_weights(name)
    choices = [f"{enum_cls.__name__}.{m.name}" for m in enum_cls] + ["DEFAULT", "pretrained"]
    if weights in ("DEFAULT", "pretrained"):
        return enum_cls.DEFAULT
    member = weights.split(".")[-1]
    if member in enum_cls.__members__:
        return enum_cls[member]
    raise RecipeError(f"unknown weights '{weights}' for {name}; valid: none, a local file, {', '.join(choices)}", key="model.weights")


def _strip_classifier(net: nn.Module, name: str) -> int:
    """Replace the model's last Linear layer by Identity; return its input width."""
    parent, attr, last = None, None, None
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise RecipeError(f"backbone '{name}' has no Linear classifier to replace", key="model.backbone")
    *path, attr = last.split(".")
    parent = net.get_submodule(".".join(path)) if path else net
    linear = getattr(parent, attr)
    setattr(parent, attr, nn.Identity())
    return linear.in_features


def _load_local_weights(net: nn.Module, weights: str) -> None:
    if weights in ("none", ""):
        return
    state = read_state_dict(Path(weights))
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, ValueError) as err:  # shape mismatch, or not a name -> tensor mapping
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise RecipeError(f"{weights}: does not fit the network ({first})", key="model.weights") from None
    log.info("loaded %s (missing %d, unexpected %d keys)", weights, len(missing), len(unexpected))


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A local state dict: safetensors, or a torch file of tensors only (weights_only=True). A pickle holding
    anything else is refused and never executed; every failure is one line naming the file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing it
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, SafetensorError, RuntimeError (not a zip), EOFError, OSError
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        why = next((line for line in lines if line.startswith("Unsupported")), lines[0])[:160]
        raise RecipeError(f"{path}: refused, not a tensors-only state dict ({type(err).__name__}: {why})",
                          key="model.weights") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise RecipeError(f"{path}: not a state dict (a mapping of parameter names to tensors)", key="model.weights")
    return state
