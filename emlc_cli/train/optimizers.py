"""The student's and the teacher's optimisers, with the backbone at its own learning rate.

`train.backbone_lr_factor` (the `finetune` recipe: a pretrained backbone trained end to end) puts each model's
backbone in a parameter group of its own at the heads' learning rate times the factor; every schedule sets a
group's rate as the scheduled rate times its `lr_factor`. The student's look-ahead step is then
theta' = theta - eta F grad L_s with F the per-parameter factors, so the meta-gradient's tangent is F g, not g
(trainer._student_steps scales it by `lr_factors`)."""
from __future__ import annotations

import torch
from torch import nn

from emlc_cli.models.build import Teacher
from emlc_cli.recipe.schema import TrainConfig


def lr_factors(student: nn.Module, factor: float) -> dict[str, float]:
    """Each student parameter's learning rate as a multiple of the heads': `factor` on the backbone."""
    return {name: factor if name.startswith("backbone.") else 1.0 for name, _ in student.named_parameters()}


def param_groups(model: nn.Module, lr: float, factor: float) -> list[dict]:
    """The backbone's parameters at lr x factor, the rest at lr; one plain group when factor is 1 (as before the
    key, so that a state saved then still resumes: saved_state checks every group key)."""
    if factor == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    backbone = model.classifier.backbone if isinstance(model, Teacher) else model.backbone
    inner = {id(p) for p in backbone.parameters()}
    rest = [p for p in model.parameters() if id(p) not in inner]
    return [{"params": list(backbone.parameters()), "lr": lr * factor, "lr_factor": factor},
            {"params": rest, "lr": lr, "lr_factor": 1.0}]


def student_and_teacher(student: nn.Module, teacher: nn.Module,
                        t: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """SGD for the student (the look-ahead assumes a plain SGD step); Adam or SGD for the teacher."""
    factor = t.backbone_lr_factor
    student_opt = torch.optim.SGD(param_groups(student, t.student_lr, factor), lr=t.student_lr,
                                  momentum=t.student_momentum, weight_decay=t.weight_decay, nesterov=False)
    groups = param_groups(teacher, t.teacher_lr, factor)
    if t.teacher_optimizer == "adam":
        teacher_opt = torch.optim.Adam(groups, lr=t.teacher_lr, weight_decay=t.weight_decay * t.teacher_decay_factor)
    else:
        teacher_opt = torch.optim.SGD(groups, lr=t.teacher_lr, momentum=t.teacher_momentum, weight_decay=t.weight_decay)
    return student_opt, teacher_opt


def scale_lrs(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at `lr` times its factor (the backbone's train.backbone_lr_factor; 1 for the heads)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)
