"""J g for a plain layer stack, from the activations the student step already computed.

`meta.target_gradient` gets J g (the tangent of the student's log-softmax along the clean gradient g, at the
pre-update weights) with generic forward-mode AD, which recomputes the whole primal forward and goes through
BatchNorm's decomposed forward-AD formula. For a network that is a chain of Conv2d / BatchNorm2d (batch
statistics) / ReLU / MaxPool2d / AdaptiveAvgPool2d(1) / Flatten / Linear (emlc's SmallCNN and MLP heads), the
primal activations were already computed by the student step's forward on the same inputs at the same weights:
recording each layer's input there leaves only the tangent arithmetic (two convolutions per conv layer instead
of three, and a fused BatchNorm tangent). The same holds for the feature MLP (LayerNorm / Linear / GELU /
Dropout), and recording Dropout's output reuses the step's own dropout mask, which a recomputed forward would
redraw. Same value as meta.target_gradient (tested in float64).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]
SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear,
             nn.LayerNorm, nn.GELU, nn.Dropout)


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """(parameter prefix, layer) in forward order for a Classifier whose backbone is one nn.Sequential `body`
    of supported layers; None when the network is anything else (the generic path is used then)."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    head = getattr(model, "head", None)
    if not isinstance(body, nn.Sequential) or not isinstance(head, nn.Linear):
        return None
    chain = [(f"backbone.body.{i}.", layer) for i, layer in enumerate(body)] + [("head.", head)]
    for _, layer in chain:
        if not isinstance(layer, SUPPORTED) or _unsupported_settings(layer):
            return None
    return chain


def _unsupported_settings(layer: nn.Module) -> bool:
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return layer.output_size not in (1, (1, 1))
    if isinstance(layer, nn.MaxPool2d):
        return bool(layer.ceil_mode) or layer.dilation not in (1, (1, 1)) or layer.padding not in (0, (0, 0))
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode != "zeros"
    if isinstance(layer, nn.LayerNorm):
        return len(layer.normalized_shape) != 1
    if isinstance(layer, nn.GELU):
        return layer.approximate != "none"
    return False


@contextlib.contextmanager
def recording(chain: list[tuple[str, nn.Module]]) -> Iterator[list[Tensor]]:
    """Inside the block, each layer's input of the next forward (Dropout's output: it carries the mask) is
    appended, detached, to the yielded list."""
    inputs: list[Tensor] = []
    handles = [layer.register_forward_hook(lambda module, args, out: inputs.append(out.detach())) if isinstance(layer, nn.Dropout)
               else layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach())) for _, layer in chain]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def target_gradient(chain: list[tuple[str, nn.Module]], inputs: list[Tensor], params: Params, tangent: Params,
                    scale: float) -> Tensor:
    """scale * J g from recorded layer inputs; `params` are the weights the inputs were recorded at."""
    if len(inputs) != len(chain):
        raise ValueError(f"recorded {len(inputs)} layer inputs for {len(chain)} layers")
    t: Tensor | None = None  # the data has no tangent
    for (prefix, layer), x in zip(chain, inputs):
        t = _layer_tangent(layer, x, t, {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)},
                           {k[len(prefix):]: v for k, v in tangent.items() if k.startswith(prefix)})
    head_prefix, head = chain[-1]
    logits = F.linear(inputs[-1], params[head_prefix + "weight"], params.get(head_prefix + "bias"))
    assert t is not None
    probs = logits.softmax(-1)
    return scale * (t - (probs * t).sum(-1, keepdim=True))


def _layer_tangent(layer: nn.Module, x: Tensor, t: Tensor | None, p: Params, g: Params) -> Tensor | None:
    if isinstance(layer, nn.Conv2d):
        conv = lambda inp, w: F.conv2d(inp, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)  # noqa: E731
        out = conv(x, g["weight"].to(x.dtype))
        if t is not None:
            out = out + conv(t, p["weight"])
        return out + g["bias"].view(1, -1, 1, 1) if "bias" in g else out
    if isinstance(layer, nn.Linear):
        out = F.linear(x, g["weight"].to(x.dtype), g.get("bias"))
        return out if t is None else out + F.linear(t, p["weight"])
    if t is None and not g:  # nothing upstream depends on the weights yet
        return None
    t = torch.zeros_like(x) if t is None else t
    if isinstance(layer, nn.BatchNorm2d):
        return _batch_norm_tangent(layer, x, t, p, g)
    if isinstance(layer, nn.LayerNorm):
        return _layer_norm_tangent(layer, x, t, p, g)
    if isinstance(layer, nn.GELU):  # d/dx x * Phi(x) = Phi(x) + x * phi(x)
        return t * (0.5 * (1 + torch.erf(x * 0.5**0.5)) + x * torch.exp(-0.5 * x * x) * (2 * torch.pi) ** -0.5)
    if isinstance(layer, nn.Dropout):  # x is the recorded output: zero where dropped, input / (1 - p) elsewhere
        return t * (x != 0).to(t.dtype) / (1 - layer.p) if layer.training and layer.p > 0 else t
    if isinstance(layer, nn.ReLU):
        return t * (x > 0)
    if isinstance(layer, nn.MaxPool2d):
        _, index = F.max_pool2d(x, layer.kernel_size, layer.stride, 0, 1, False, return_indices=True)
        return t.flatten(2).gather(2, index.flatten(2)).view(index.shape)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return t.mean((2, 3), keepdim=True)
    return t.flatten(layer.start_dim, layer.end_dim)  # nn.Flatten


def _batch_norm_tangent(layer: nn.BatchNorm2d, x: Tensor, t: Tensor, p: Params, g: Params) -> Tensor:
    """Tangent of y = gamma * (x - mean) / sqrt(var + eps) + beta with batch statistics over (N, H, W):
    dy = a * (dx - mean(dx) - xhat * mean(xhat * dx)) + dgamma * xhat + dbeta, a = gamma / sqrt(var + eps)."""
    dims, shape = (0, 2, 3), (1, -1, 1, 1)
    # the fused kernel gives xhat and 1/sqrt(var + eps) in one pass (torch.var_mean is ~8x slower on CPU)
    xhat, _, inv = torch.native_batch_norm(x, None, None, None, None, True, 0.0, layer.eps)
    inv = inv.view(shape)
    mean_t, mean_xt = t.mean(dims, keepdim=True), (xhat * t).mean(dims, keepdim=True)
    gamma = p["weight"].view(shape) if "weight" in p else torch.ones_like(inv)
    a = gamma * inv
    d_gamma = g["weight"].view(shape) if "weight" in g else torch.zeros_like(inv)
    d_beta = g["bias"].view(shape) if "bias" in g else torch.zeros_like(inv)
    # a * (t - mean_t) - xhat * (a * mean_xt) + d_gamma * xhat + d_beta, as two fused passes
    return torch.addcmul(d_beta - a * mean_t, t, a).addcmul_(xhat, d_gamma - a * mean_xt)


def _layer_norm_tangent(layer: nn.LayerNorm, x: Tensor, t: Tensor, p: Params, g: Params) -> Tensor:
    """The BatchNorm tangent with statistics over the last dimension of each row."""
    xhat, _, inv = torch.native_layer_norm(x, layer.normalized_shape, None, None, layer.eps)
    mean_t, mean_xt = t.mean(-1, keepdim=True), (xhat * t).mean(-1, keepdim=True)
    gamma = p["weight"] if "weight" in p else torch.ones_like(x[0])
    d_gamma = g["weight"] if "weight" in g else torch.zeros_like(x[0])
    d_beta = g["bias"] if "bias" in g else torch.zeros_like(x[0])
    return gamma * inv * (t - mean_t - xhat * mean_xt) + d_gamma * xhat + d_beta
