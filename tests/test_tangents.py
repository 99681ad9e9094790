"""The recorded-activation J g (tangents.py) equals generic forward-mode AD (meta.target_gradient)."""
from __future__ import annotations

import pytest
import torch

from emlc_cli import meta, tangents
from emlc_cli.models import FeatureMLP, build_classifier
from emlc_cli.trainer import batch_stats_only


@pytest.mark.parametrize("channels_last", [False, True])
def test_recorded_jvp_equals_forward_mode_ad(channels_last):
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 5, 4, True, "none", 0).double()
    for module in model.modules():  # non-trivial affine BatchNorm parameters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    chain = tangents.layer_chain(model)
    assert chain is not None
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    tangent = {n: torch.randn_like(p) for n, p in params.items()}
    with tangents.recording(chain) as recorded:
        model(x)
    fast = tangents.target_gradient(chain, recorded, params, tangent, 0.3)
    buffers = dict(model.named_buffers())
    with batch_stats_only(model):
        reference = meta.target_gradient(lambda p, inp: torch.func.functional_call(model, (p, buffers), (inp,)),
                                         params, tangent, x, 0.3)
    assert reference.abs().max() > 1e-3
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name,small_stem", [("resnet18", True), ("resnet18", False), ("resnet50", True)])
def test_recorded_jvp_through_resnet_blocks(name, small_stem):
    torch.manual_seed(0)
    model = build_classifier(name, 3, 8, small_stem, "none", 0).double()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 32 if small_stem else 64, 32 if small_stem else 64, dtype=torch.float64)
    chain = tangents.layer_chain(model)
    assert chain is not None and any(isinstance(node, tangents.Residual) for node in chain)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    tangent = {n: torch.randn_like(p) * 0.1 for n, p in params.items()}
    with tangents.recording(chain) as recorded:
        model(x)
    fast = tangents.target_gradient(chain, recorded, params, tangent, 0.3)
    buffers = dict(model.named_buffers())
    with batch_stats_only(model):
        reference = meta.target_gradient(lambda p, inp: torch.func.functional_call(model, (p, buffers), (inp,)),
                                         params, tangent, x, 0.3)
    assert reference.abs().max() > 1e-3
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-10)


def test_feature_mlp_with_dropout_reuses_the_step_mask():
    torch.manual_seed(0)
    model = build_classifier("mlp", 4, 8, True, "none", 6).double()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.5, 0.5)
    chain = tangents.layer_chain(model)
    assert chain is not None and any(isinstance(layer, torch.nn.Dropout) for _, layer in chain)
    x = torch.randn(7, 6, dtype=torch.float64)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    tangent = {n: torch.randn_like(p) for n, p in params.items()}
    torch.manual_seed(5)
    with tangents.recording(chain) as recorded:
        model(x)
    fast = tangents.target_gradient(chain, recorded, params, tangent, 0.5)
    torch.manual_seed(5)  # the reference redraws the same dropout mask
    reference = meta.target_gradient(lambda p, inp: torch.func.functional_call(model, p, (inp,)), params, tangent, x, 0.5)
    assert reference.abs().max() > 1e-3
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-11)


def test_other_networks_use_the_generic_path():
    assert tangents.layer_chain(build_classifier("mobilenet_v3_small", 3, 8, True, "none", 0)) is None
    assert tangents.layer_chain(FeatureMLP(4)) is None  # a bare backbone, not a Classifier
