"""Frozen-backbone mode (`model.freeze_backbone: true`): embed every image once with the pretrained backbone,
keep the features, and run warm-up, meta steps and corrections on heads over the cached features.

The backbone's weights never change, so its forward pass is the same in every epoch: paying it once instead
of (3 + K) times per meta step is what makes a ResNet-50 / ImageNet feature space usable on a CPU."""
from __future__ import annotations

import dataclasses
import logging
import time

import torch
from torch import Tensor, nn

from emlc_cli.runtime import distributed
from emlc_cli.models.backbones import FEATURE_HEAD
from emlc_cli.cache.batches import BatchMaker, ordered_batches
from emlc_cli.models.build import build_backbone
from emlc_cli.recipe.schema import Recipe

log = logging.getLogger(__name__)


def frozen_backbone(recipe: Recipe, device: torch.device) -> nn.Module:
    m = recipe.model
    backbone, _ = build_backbone(m.backbone, m.width, m.small_stem, m.weights)
    backbone.eval().requires_grad_(False)
    return backbone.to(device)


@torch.no_grad()
def embed(backbone: nn.Module, images: Tensor, device: torch.device, batch_size: int = 256) -> Tensor:
    """float32 [N, D] features of uint8 images (the network's eval-mode penultimate layer). Under torchrun each
    rank embeds its share and every rank gets all rows."""
    world, started = distributed.world(), time.perf_counter()
    batches = BatchMaker(device, "none", channels_last=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def forward(rows: Tensor) -> Tensor:
        with autocast:
            return backbone(batches(rows, train=False)).float().flatten(1).cpu()

    features = torch.zeros(len(images), forward(images[:1]).shape[1])
    mine = distributed.shard(len(images), world.size, world.rank)
    for idx in ordered_batches(len(mine), batch_size):
        features[mine.start + idx] = forward(images[mine.start + idx])
    distributed.share_shards_(features)
    log.info("embedded %d images in %.1fs (%d-d features)", len(images), time.perf_counter() - started, features.shape[1])
    return features


class FrozenFeatures(nn.Module):
    """A saved frozen-backbone run as one image classifier: head(backbone(x)) (for evaluate and export)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x).flatten(1))


def head_recipe(recipe: Recipe) -> Recipe:
    """The recipe the trainer runs on cached features: an MLP head of model.width (no image augmentation)."""
    model = dataclasses.replace(recipe.model, backbone=FEATURE_HEAD, weights="none")
    data = dataclasses.replace(recipe.data, augment="none")
    return dataclasses.replace(recipe, model=model, data=data)
