"""The EMLC meta-gradient, as pure functions over tensors.

No optimisers, no module mutation, no I/O. A model enters only as a functional forward
`forward(params, inputs) -> logits`, so the same code serves the trainer and the float64
reference tests.

Notation: a student step on noisy inputs x with soft targets t is
    theta' = theta - eta * grad_theta L_s(theta, t),  L_s = -(1/n) sum_i <t_i, log p_theta(x_i)>
and the clean loss after it is L_c(theta'). With g = grad L_c(theta'),
    dL_c / dt_i = (eta / n) * (J g)_i,   J g = d/ds log p_{theta + s g}(x) at s = 0,
which forward-mode AD gives in about one extra forward pass.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]
Forward = Callable[[Params, Tensor], Tensor]


def corrected_targets(teacher_logits: Tensor, retain: Tensor, given: Tensor) -> Tensor:
    """w * onehot(given) + (1 - w) * softmax(teacher): a distribution per row."""
    onehot = F.one_hot(given, teacher_logits.shape[-1]).to(teacher_logits.dtype)
    weight = retain.to(teacher_logits.dtype).unsqueeze(-1)
    return weight * onehot + (1.0 - weight) * teacher_logits.softmax(-1)


def soft_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    per_row = -(targets * logits.log_softmax(-1)).sum(-1)
    return per_row.mean() if reduction == "mean" else per_row.sum()


def target_gradient(forward: Forward, params: Params, clean_grad: Params, inputs: Tensor, scale: float) -> Tensor:
    """d(clean loss after the student step)/d(targets) = scale * J g, by forward-mode AD.

    `params` are the student's weights *before* the step, `clean_grad` the clean-loss
    gradient *after* it, `scale` = eta / n (n = the rows the student loss is averaged over).
    Rows of the result line up with `inputs`.
    """
    names = list(params)

    def log_probs(*values: Tensor) -> Tensor:
        return forward(dict(zip(names, values)), inputs).log_softmax(-1)

    primals = tuple(params[n] for n in names)
    tangents = tuple(clean_grad[n].to(params[n].dtype) for n in names)
    _, jvp_out = torch.func.jvp(log_probs, primals, tangents)
    return scale * jvp_out


def along_the_step(clean_grad: Params, lr_factors: dict[str, float]) -> Params:
    """The tangent for a step taken at per-parameter learning rates eta * f (train.backbone_lr_factor): with
    theta' = theta - eta F grad L_s, dL_c / dt_i = (eta / n) * (J F g)_i, so J is taken along F g."""
    return {n: g * lr_factors[n] if lr_factors.get(n, 1.0) != 1.0 else g for n, g in clean_grad.items()}


def k_step_discounts(steps: int, eta: float) -> list[float]:
    """Weight of step k's JVP in a K-step look-ahead: (1 - eta)^(K-1-k), k = 0..K-1.

    Step k's effect on the final weights passes through the K-1-k later steps, each
    approximated as (1 - eta) I. Index k pairs with chunk k; the last chunk is undiscounted.
    """
    return [(1.0 - eta) ** (steps - 1 - k) for k in range(steps)]


def combine_chunk_gradients(chunk_grads: list[Tensor], discounts: list[float]) -> Tensor:
    """Concatenate per-chunk target gradients, each scaled by the discount of its own step."""
    if len(chunk_grads) != len(discounts):
        raise ValueError(f"{len(chunk_grads)} chunk gradients but {len(discounts)} discounts")
    return torch.cat([grad * d for grad, d in zip(chunk_grads, discounts)])


def adversarial_labels(teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """The teacher's most likely class other than the true one."""
    masked = teacher_logits.detach().clone()
    masked.scatter_(-1, labels.unsqueeze(-1), float("-inf"))
    return masked.argmax(-1)


def retain_loss(retain_true: Tensor, retain_adversarial: Tensor) -> Tensor:
    """BCE teaching the enhancer to keep a true label (w -> 1) and reject a wrong one (w -> 0)."""
    true_part = F.binary_cross_entropy(retain_true.clamp(1e-6, 1 - 1e-6), torch.ones_like(retain_true))
    adv_part = F.binary_cross_entropy(retain_adversarial.clamp(1e-6, 1 - 1e-6), torch.zeros_like(retain_adversarial))
    return 0.5 * (true_part + adv_part)


def meta_term(target_grad: Tensor, targets: Tensor) -> Tensor:
    """Surrogate whose gradient w.r.t. the teacher is the meta-gradient: <dL_c/dt (detached), t>."""
    return (target_grad.detach() * targets).sum()


def teacher_loss(clean_ce: Tensor, retain: Tensor, meta: Tensor, retain_weight: float = 1.0) -> Tensor:
    """CE on the verified batch + retain BCE + the meta term."""
    return clean_ce + retain_weight * retain + meta


def mixup(inputs: Tensor, targets: Tensor, alpha: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Convex combination of the batch with a shuffled copy of itself (targets as distributions)."""
    if alpha <= 0:
        return inputs, targets
    beta = torch.distributions.Beta(alpha, alpha)
    lam = float(beta.sample())
    lam = max(lam, 1.0 - lam)
    order = torch.randperm(inputs.shape[0], generator=generator, device="cpu").to(inputs.device)
    return lam * inputs + (1 - lam) * inputs[order], lam * targets + (1 - lam) * targets[order]
