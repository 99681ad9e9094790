"""Device choice, seeding and threading."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from emlc_cli.errors import DeviceError


def pick_device(spec: str = "auto") -> torch.device:
    """auto = CUDA when present, else CPU. Asking for CUDA without one is an error, not a fallback."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        if "OMP_NUM_THREADS" not in os.environ:  # all cores unless the user pinned a thread count
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA GPU is available here; use --device cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(spec)
    raise DeviceError(f"--device '{spec}': expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
