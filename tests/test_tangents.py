"""The recorded-activation J g (tangents.py) equals generic forward-mode AD (meta.target_gradient)."""
from __future__ import annotations

import pytest
import torch

from emlc_cli.train import meta, tangents
from emlc_cli.models.build import batch_stats_only, build_classifier
from emlc_cli.models.nets import FeatureMLP


def float64_model(name: str, num_classes: int, small_stem: bool = True, in_features: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_classifier(name, num_classes, 8 if name != "small_cnn" else 4, small_stem, "none", in_features).double()
    for module in model.modules():  # non-trivial affine normalisation parameters
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.5, 0.5)
    return model


def assert_recorded_jvp_matches(model: torch.nn.Module, x: torch.Tensor, tangent_scale: float = 1.0, seed: int = 5) -> None:
    """tangents.target_gradient from one recorded forward == meta.target_gradient by torch.func.jvp
    (BatchNorm on batch statistics, the same dropout mask: both forwards start from `seed`)."""
    chain = tangents.layer_chain(model)
    assert chain is not None
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    tangent = {n: torch.randn_like(p) * tangent_scale for n, p in params.items()}
    torch.manual_seed(seed)
    with tangents.recording(chain) as recorded:
        model(x)
    fast = tangents.target_gradient(chain, recorded, params, tangent, 0.3)
    buffers = dict(model.named_buffers())
    torch.manual_seed(seed)
    with batch_stats_only(model):
        reference = meta.target_gradient(lambda p, inp: torch.func.functional_call(model, (p, buffers), (inp,)),
                                         params, tangent, x, 0.3)
    assert reference.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
def test_recorded_jvp_equals_forward_mode_ad(channels_last):
    model, x = float64_model("small_cnn", 5), torch.randn(6, 3, 16, 16, dtype=torch.float64)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    assert_recorded_jvp_matches(model, x)


@pytest.mark.parametrize("name,small_stem", [("resnet18", True), ("resnet18", False), ("resnet50", True)])
def test_recorded_jvp_through_resnet_blocks(name, small_stem):
    model = float64_model(name, 3, small_stem)
    assert any(isinstance(node, tangents.Residual) for node in tangents.layer_chain(model))
    size = 32 if small_stem else 64
    assert_recorded_jvp_matches(model, torch.randn(4, 3, size, size, dtype=torch.float64), tangent_scale=0.1)


def test_feature_mlp_with_dropout_reuses_the_step_mask():
    model = float64_model("mlp", 4, in_features=6)
    assert any(isinstance(layer, torch.nn.Dropout) for _, layer in tangents.layer_chain(model))
    assert_recorded_jvp_matches(model, torch.randn(7, 6, dtype=torch.float64))


def test_other_networks_use_the_generic_path():
    assert tangents.layer_chain(build_classifier("mobilenet_v3_small", 3, 8, True, "none", 0)) is None
    assert tangents.layer_chain(FeatureMLP(4)) is None  # a bare backbone, not a Classifier
