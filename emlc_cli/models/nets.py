"""The networks emlc defines itself (the others come from torchvision): see backbones.py for the table that
names them."""
from __future__ import annotations

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Four conv blocks (width, 2w, 4w, 8w) with BatchNorm; sized for 32-64 px on a CPU."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
            layers.append(nn.MaxPool2d(2) if i < 3 else nn.AdaptiveAvgPool2d(1))
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out_features = chans[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class FeatureMLP(nn.Module):
    """For feature-vector datasets (precomputed embeddings): LayerNorm -> Linear -> GELU -> Linear -> GELU."""

    def __init__(self, in_features: int, width: int = 256) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, width), nn.GELU(),
                                  nn.Dropout(0.1), nn.Linear(width, width), nn.GELU())
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
