"""The meta-gradient against an explicit double-backward reference, in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emlc_cli.train import meta
from emlc_cli.models.build import batch_stats_only


def tiny_model(with_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8)] + ([nn.BatchNorm1d(8)] if with_norm else []) + [nn.Tanh(), nn.Linear(8, 4)]
    return nn.Sequential(*layers).double().train()


def functional(model: nn.Module):
    buffers = dict(model.named_buffers())
    return lambda params, x: torch.func.functional_call(model, (params, buffers), (x,))


def explicit_reference(model: nn.Module, chunks: list[torch.Tensor], targets: list[torch.Tensor],
                       xc: torch.Tensor, yc: torch.Tensor, eta: float, discounts: list[float]) -> list[torch.Tensor]:
    """Double backward through explicit SGD steps; later steps' Jacobians replaced by (1-eta) I via `discounts`."""
    forward = functional(model)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    leaves = [t.clone().requires_grad_(True) for t in targets]
    effects = []
    for x, t in zip(chunks, leaves):
        loss = meta.soft_cross_entropy(forward(params, x), t)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        step = {n: -eta * g for n, g in zip(params, grads)}
        effects.append(step)
        params = {n: (p + s).detach().requires_grad_(True) for (n, p), s in zip(params.items(), step.values())}
    final = {n: params[n] + sum(d * (e[n] - e[n].detach()) for d, e in zip(discounts, effects)) for n in params}
    clean_loss = F.cross_entropy(forward(final, xc), yc)
    return list(torch.autograd.grad(clean_loss, leaves))


def jvp_gradients(model: nn.Module, chunks, targets, xc, yc, eta) -> list[torch.Tensor]:
    forward = functional(model)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    saved = []
    for x, t in zip(chunks, targets):
        loss = meta.soft_cross_entropy(forward(params, x), t)
        grads = torch.autograd.grad(loss, list(params.values()))
        saved.append(({n: p.detach() for n, p in params.items()}, x))
        params = {n: (p - eta * g).detach().requires_grad_(True) for (n, p), g in zip(params.items(), grads)}
    final = params
    clean_grad = dict(zip(final, torch.autograd.grad(F.cross_entropy(forward(final, xc), yc), list(final.values()))))
    per_chunk = [meta.target_gradient(forward, p, clean_grad, x, eta / len(x)) for p, x in saved]
    return per_chunk


def make_batch(k: int, rows: int = 6):
    g = torch.Generator().manual_seed(1)
    chunks = [torch.randn(rows, 6, generator=g, dtype=torch.float64) for _ in range(k)]
    targets = [torch.softmax(torch.randn(rows, 4, generator=g, dtype=torch.float64), -1) for _ in range(k)]
    xc = torch.randn(10, 6, generator=g, dtype=torch.float64)
    yc = torch.randint(0, 4, (10,), generator=g)
    return chunks, targets, xc, yc


@pytest.mark.parametrize("with_norm", [False, True])
def test_one_step_jvp_equals_double_backward(with_norm):
    model = tiny_model(with_norm)
    chunks, targets, xc, yc = make_batch(1)
    with batch_stats_only(model):
        ours = jvp_gradients(model, chunks, targets, xc, yc, eta=0.3)[0]
        ref = explicit_reference(model, chunks, targets, xc, yc, 0.3, [1.0])[0]
    assert torch.linalg.norm(ours - ref) / torch.linalg.norm(ref) < 1e-6


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_step_pairs_each_discount_with_its_own_chunk(k):
    model = tiny_model(False)
    chunks, targets, xc, yc = make_batch(k)
    eta = 0.3
    discounts = meta.k_step_discounts(k, eta)
    ours = meta.combine_chunk_gradients(jvp_gradients(model, chunks, targets, xc, yc, eta), discounts)
    ref = torch.cat(explicit_reference(model, chunks, targets, xc, yc, eta, discounts))
    assert torch.linalg.norm(ours - ref) / torch.linalg.norm(ref) < 1e-6
    reversed_pairing = meta.combine_chunk_gradients(jvp_gradients(model, chunks, targets, xc, yc, eta), discounts[::-1])
    assert torch.linalg.norm(reversed_pairing - ref) / torch.linalg.norm(ref) > 1e-3


def test_k_step_discounts():
    assert meta.k_step_discounts(3, 0.1) == pytest.approx([0.81, 0.9, 1.0])
    assert meta.k_step_discounts(1, 0.5) == [1.0]


def test_batch_stats_only_leaves_running_stats_alone():
    model = tiny_model(True)
    before = model[1].running_mean.clone()
    with batch_stats_only(model):
        model(torch.randn(5, 6, dtype=torch.float64))
    assert torch.equal(model[1].running_mean, before)
    model(torch.randn(5, 6, dtype=torch.float64))
    assert not torch.equal(model[1].running_mean, before)


def test_corrected_targets_are_distributions():
    logits = torch.randn(7, 5)
    retain = torch.rand(7)
    given = torch.randint(0, 5, (7,))
    targets = meta.corrected_targets(logits, retain, given)
    assert torch.allclose(targets.sum(-1), torch.ones(7))
    assert (targets >= 0).all()
    full = meta.corrected_targets(logits, torch.ones(7), given)
    assert torch.equal(full.argmax(-1), given)


def test_adversarial_labels_are_the_top_wrong_class():
    logits = torch.tensor([[5.0, 4.0, 1.0], [0.0, 1.0, 3.0]])
    assert meta.adversarial_labels(logits, torch.tensor([0, 1])).tolist() == [1, 2]


def test_retain_loss_rewards_keeping_true_and_rejecting_adversarial():
    good = meta.retain_loss(torch.tensor([0.99]), torch.tensor([0.01]))
    bad = meta.retain_loss(torch.tensor([0.01]), torch.tensor([0.99]))
    assert good < 0.05 < bad


def test_meta_term_gradient_is_the_detached_target_gradient():
    targets = torch.rand(3, 4, requires_grad=True)
    grad = torch.randn(3, 4, requires_grad=True)
    meta.meta_term(grad, targets).backward()
    assert torch.allclose(targets.grad, grad.detach())
    assert grad.grad is None


def test_per_parameter_learning_rates_take_the_jvp_along_the_scaled_gradient():
    """train.backbone_lr_factor: a step at eta * f per parameter; the target gradient along F g (meta.along_the_step)
    equals double backward through that step, and differs from the one along g."""
    model = tiny_model(with_norm=True)
    (x,), (t,), xc, yc = make_batch(1)
    factors = {n: (0.1 if n.startswith("0.") else 1.0) for n, _ in model.named_parameters()}
    forward, eta = functional(model), 0.3
    with batch_stats_only(model):
        params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
        leaf = t.clone().requires_grad_(True)
        grads = torch.autograd.grad(meta.soft_cross_entropy(forward(params, x), leaf), list(params.values()), create_graph=True)
        stepped = {n: p - eta * factors[n] * g for (n, p), g in zip(params.items(), grads)}
        ref = torch.autograd.grad(F.cross_entropy(forward(stepped, xc), yc), leaf)[0]
        after = {n: v.detach().requires_grad_(True) for n, v in stepped.items()}
        clean_grad = dict(zip(after, torch.autograd.grad(F.cross_entropy(forward(after, xc), yc), list(after.values()))))
        before = {n: p.detach() for n, p in params.items()}
        ours = meta.target_gradient(forward, before, meta.along_the_step(clean_grad, factors), x, eta / len(x))
        plain = meta.target_gradient(forward, before, clean_grad, x, eta / len(x))
    assert torch.linalg.norm(ours - ref) / torch.linalg.norm(ref) < 1e-6
    assert torch.linalg.norm(plain - ref) / torch.linalg.norm(ref) > 1e-3
