"""One eval-mode pass of the teacher (with its enhancer) and the student over a set of cached rows."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from emlc_cli.cache.batches import BatchMaker, TensorSet, ordered_batches
from emlc_cli.runtime.device import release_freed_heap

TRIM_EVERY = 32  # batches between heap trims: 1M images grew the heap 0.2 GB with them, 5 GB without


@torch.no_grad()
def predict(student: nn.Module, teacher: nn.Module, batches: BatchMaker, data: TensorSet, num_classes: int,
            batch_size: int = 512) -> dict[str, np.ndarray]:
    """Logits and probabilities of both networks, and the enhancer's retain weight for each row's label."""
    device = batches.device
    out: dict[str, list[Tensor]] = {"teacher_logits": [], "student_logits": [], "retain": []}
    for n, idx in enumerate(ordered_batches(len(data), batch_size), 1):
        if n % TRIM_EVERY == 0:
            release_freed_heap()
        x = batches(data.take(idx), train=False)
        features, logits = teacher.classifier.features_and_logits(x)
        out["teacher_logits"].append(logits.float().cpu())
        out["retain"].append(teacher.enhancer(features, data.labels[idx].to(device)).float().cpu())
        out["student_logits"].append(student(x).float().cpu())
    cat = {k: (torch.cat(v) if v else torch.zeros(0, num_classes)) for k, v in out.items()}
    return {
        "teacher_logits": cat["teacher_logits"].numpy(), "student_logits": cat["student_logits"].numpy(),
        "teacher_probs": cat["teacher_logits"].softmax(-1).numpy(),
        "student_probs": cat["student_logits"].softmax(-1).numpy(),
        "retain": cat["retain"].reshape(-1).numpy(),
    }
