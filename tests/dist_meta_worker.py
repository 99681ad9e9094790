"""One process of the distributed meta-gradient check (tests/test_distributed.py), float64, tiny MLP.

Run with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) for a rank's share of the union
batch, or without it for the single-process reference on the whole union batch. Writes the teacher's gradients
and both networks' weights after one meta step to OUT."""
from __future__ import annotations

import sys

import torch

from emlc_cli.runtime import distributed
from emlc_cli.cache.batches import TensorSet
from emlc_cli.recipe.schema import load_recipe
from emlc_cli.runtime.device import seed_everything
from emlc_cli.train.trainer import MetaTrainer

K, NOISY, CLEAN, DIM, CLASSES = 2, 8, 8, 6, 3


def union_batch() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(123)
    xn, xc = torch.randn(NOISY, DIM, generator=g), torch.randn(CLEAN, DIM, generator=g)
    return xn, torch.randint(0, CLASSES, (NOISY,), generator=g), xc, torch.randint(0, CLASSES, (CLEAN,), generator=g)


def rank_rows(total: int, parts: int, rank: int, size: int) -> list[int]:
    """Rank `rank`'s rows of a union batch laid out part-major: part p of rank r is block p * size + r.
    With parts = K this pairs every rank's chunk k with the union's chunk k."""
    block = total // (parts * size)
    return [p * size * block + rank * block + i for p in range(parts) for i in range(block)]


def main(out: str) -> None:
    torch.set_default_dtype(torch.float64)
    world = distributed.init(torch.device("cpu"))
    recipe = load_recipe("features", [f"meta.steps={K}", f"train.batch_size={NOISY}", f"train.clean_batch_size={CLEAN}",
                                      "model.width=8", "model.enhancer_hidden=8", "model.label_embedding=4",
                                      "meta.mix_clean=true", "train.teacher_optimizer=sgd"])
    seed_everything(0)
    dummy = TensorSet(torch.zeros(16, DIM), torch.zeros(16, dtype=torch.long))
    trainer = MetaTrainer(recipe, CLASSES, dummy, dummy, dummy, torch.device("cpu"), seed=0)
    for module in list(trainer.student.modules()) + list(trainer.teacher.modules()):
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    xn, yn, xc, yc = union_batch()
    noisy_rows = rank_rows(NOISY, K, world.rank, world.size)  # K chunks per rank
    clean_rows = rank_rows(CLEAN, 2, world.rank, world.size)  # retain half, mixed-in half
    trainer.meta_step(xn[noisy_rows], yn[noisy_rows], xc[clean_rows], yc[clean_rows], eta=0.3)
    if world.is_main:
        torch.save({"teacher_grads": {n: p.grad for n, p in trainer.teacher.named_parameters()},
                    "teacher": trainer.teacher.state_dict(), "student": trainer.student.state_dict()}, out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
