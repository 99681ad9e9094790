"""Seeded label corruption for the demo, benchmarks and tests."""
from __future__ import annotations

import numpy as np

CIFAR10_ASYMMETRIC = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}


def symmetric(labels: np.ndarray, num_classes: int, rate: float, seed: int = 0) -> np.ndarray:
    """Flip exactly round(rate * n) labels, each to a uniformly drawn *other* class."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flip = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    offsets = rng.integers(1, num_classes, size=len(flip))
    noisy[flip] = (labels[flip] + offsets) % num_classes
    return noisy


def asymmetric(labels: np.ndarray, classes: list[str], rate: float, mapping: dict[str, str] | None = None,
               seed: int = 0) -> np.ndarray:
    """Flip a fraction `rate` of each mapped class to its look-alike (CIFAR-10 pairs by default)."""
    rng = np.random.default_rng(seed)
    mapping = CIFAR10_ASYMMETRIC if mapping is None else mapping
    lookup = {name: i for i, name in enumerate(classes)}
    noisy = labels.copy()
    for source, target in mapping.items():
        members = np.flatnonzero(labels == lookup[source])
        flip = rng.choice(members, size=int(round(rate * len(members))), replace=False)
        noisy[flip] = lookup[target]
    return noisy
