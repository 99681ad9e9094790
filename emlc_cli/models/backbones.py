"""The backbone table: each network emlc builds by name (`model.backbone`), and what it is.

Any other name is a timm model (`hf-hub:`, `local-dir:`, `timm:` or a name timm's registry knows: pretrained.py)
or a torchvision classification model (build.py builds either). Torch is imported only when a network is built,
so recipes and data checks read the traits without it. Adding a backbone is its network (a module with
`out_features`) and one row of BACKBONES."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from emlc_cli.errors import DataError

if TYPE_CHECKING:
    from emlc_cli.data.labeled import LabeledImages


@dataclass(frozen=True)
class Backbone:
    """How to build a backbone (width, in_features) -> nn.Module with `out_features`, and its traits."""

    build: Optional[Callable[[int, int], Any]] = None  # None: a torchvision model, built by models/build.py
    takes_features: bool = False       # its input is a feature vector (N x D), not an image
    channels_last_on_cpu: bool = False  # channels_last is faster for it on the CPU too (always used on CUDA)
    recorded_jvp: bool = True          # J g may come from the student step's recorded activations (tangents.py
                                       # still checks every layer, and falls back to torch.func.jvp)


def _small_cnn(width: int, in_features: int) -> Any:
    from emlc_cli.models.nets import SmallCNN

    return SmallCNN(width)


def _feature_mlp(width: int, in_features: int) -> Any:
    from emlc_cli.models.nets import FeatureMLP

    return FeatureMLP(in_features, width)


BACKBONES: dict[str, Backbone] = {
    "small_cnn": Backbone(_small_cnn, channels_last_on_cpu=True),
    "mlp": Backbone(_feature_mlp, takes_features=True),
}
TORCHVISION = Backbone()  # the traits of every other name (ResNets take the recorded-activation path)
TIMM = Backbone(recorded_jvp=False)  # timm networks: J g through torch.func.jvp (their layers are not all recorded)
TIMM_PREFIXES = ("hf-hub:", "local-dir:", "timm:")  # names that always mean timm (pretrained.py)
FEATURE_HEAD = "mlp"  # the heads trained on cached features (frozen-backbone mode)


def backbone(name: str) -> Backbone:
    """The table's entry for `name`, else the timm traits for a name that says timm, else torchvision's."""
    return TIMM if name.startswith(TIMM_PREFIXES) else BACKBONES.get(name, TORCHVISION)


def check_model_input(data: "LabeledImages", name: str) -> None:
    """Feature vectors need a backbone that takes them, and images one that does not."""
    takes = backbone(name).takes_features
    where = data.origin.get("location", data.root)
    if data.features is not None and not takes:
        raise DataError(f"feature vectors need the MLP backbone (--recipe features, or model.backbone={FEATURE_HEAD}); "
                        f"the model is '{name}'", path=where)
    if data.features is None and takes:
        raise DataError(f"model.backbone={name} needs feature vectors: pass --feature-column (or a .npy file)",
                        path=where)
