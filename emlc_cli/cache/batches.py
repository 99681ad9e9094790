"""Batches from a decoded uint8 image cache, augmented on the device in whole batches."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class TensorSet:
    """Labelled rows of the decoded cache: row i is images[rows[i]] (images[i] when rows is None).

    `images` is the whole cache (uint8 N x 3 x S x S, or float features N x D), shared by every set, on the
    device, in host memory or memory-mapped; sets hold indices, never copies."""

    images: Tensor
    labels: Tensor
    rows: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: Tensor) -> Tensor:
        """The cache rows of batch `idx` (positions in this set)."""
        return self.images[idx if self.rows is None else self.rows[idx]]

    def part(self, positions: range) -> "TensorSet":
        """A contiguous slice of this set, still sharing the cache."""
        rows = torch.arange(len(self)) if self.rows is None else self.rows
        return TensorSet(self.images, self.labels[positions.start: positions.stop], rows[positions.start: positions.stop])


class BatchMaker:
    """Turns uint8 images into normalised float batches, with optional crop+flip augmentation."""

    def __init__(self, device: torch.device, augment: str = "crop_flip", channels_last: bool = True, pad: int = 4,
                 mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> None:
        self.device = device
        self.augment = augment
        self.channels_last = channels_last
        self.pad = pad
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, images: Tensor, train: bool, generator: torch.Generator | None = None) -> Tensor:
        x = images.to(self.device, non_blocking=True).float()
        if x.ndim == 2:  # feature vectors: no augmentation, no pixel normalisation
            return x
        if train and self.augment != "none":
            x = self._augment(x, generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _augment(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = x.shape
        flips = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flips.to(x.device).view(n, 1, 1, 1), x.flip(-1), x)
        if self.augment != "crop_flip":
            return x
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p), mode="reflect")
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=generator).to(x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1) + dy
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w) + dx
        x = padded.gather(2, rows.expand(n, 3, h, w + 2 * p))
        return x.gather(3, cols.expand(n, 3, h, w))


class ShuffledSampler:
    """Shuffled index batches with an explicit position, so a run can stop and resume mid-epoch exactly.

    `endless=True` reshuffles whenever a pass ends (the verified set is smaller than the noisy pool);
    otherwise one pass is `len // batch_size` full batches.
    """

    def __init__(self, size: int, batch_size: int, endless: bool = False) -> None:
        self.size, self.batch_size, self.endless = size, batch_size, endless
        self.order = torch.zeros(0, dtype=torch.long)
        self.position = 0

    def new_pass(self, generator: torch.Generator) -> None:
        order = torch.randperm(self.size, generator=generator)
        if self.size < self.batch_size:
            order = order.repeat((self.batch_size + self.size - 1) // self.size)
        self.order, self.position = order, 0

    def next(self, generator: torch.Generator) -> Tensor:
        if self.position + self.batch_size > len(self.order):
            if not self.endless and len(self.order):
                raise StopIteration
            self.new_pass(generator)
        batch = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = state["order"].clone(), int(state["position"])


def ordered_batches(size: int, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, size, batch_size):
        yield torch.arange(start, min(start + batch_size, size))
