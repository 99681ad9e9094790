"""J g for a plain layer stack, from the activations the student step already computed.

`meta.target_gradient` gets J g (the tangent of the student's log-softmax along the clean gradient g, at the
pre-update weights) with generic forward-mode AD, which recomputes the whole primal forward and goes through
BatchNorm's decomposed forward-AD formula. For a network made of Conv2d / BatchNorm2d (batch statistics) /
ReLU / MaxPool2d / AdaptiveAvgPool2d(1) / Flatten / Linear, in a chain (emlc's SmallCNN) or in torchvision
ResNet blocks (relu(main(x) + skip(x))), the
primal activations were already computed by the student step's forward on the same inputs at the same weights:
recording each layer's input there leaves only the tangent arithmetic (two convolutions per conv layer instead
of three, and a fused BatchNorm tangent). The same holds for the feature MLP (LayerNorm / Linear / GELU /
Dropout), and recording Dropout's output reuses the step's own dropout mask, which a recomputed forward would
redraw. Same value as meta.target_gradient (tested in float64).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]
Leaf = tuple[str, nn.Module]
SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear,
             nn.LayerNorm, nn.GELU, nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class Residual:
    """A torchvision ResNet block: relu(main(x) + skip(x)), skip = x when it is empty. Its layers run (and are
    recorded) in that order: main, skip, then the shared ReLU once more."""

    main: list["Node"]
    skip: list["Node"]
    relu: Leaf


Node = Union[Leaf, Residual]


def layer_chain(model: nn.Module) -> list[Node] | None:
    """The student's layers in forward order, for a Classifier whose backbone is one nn.Sequential `body`
    (SmallCNN, the feature MLP) or a torchvision ResNet of supported layers; None for anything else (the
    generic forward-mode path is used then)."""
    backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        return None
    if isinstance(getattr(backbone, "body", None), nn.Sequential):
        chain: list[Node] = [(f"backbone.body.{i}.", layer) for i, layer in enumerate(backbone.body)]
    elif _is_resnet(backbone):
        chain = _resnet_chain(backbone)
    else:
        return None
    chain.append(("head.", head))
    return chain if all(_supported(leaf) for leaf in _leaves(chain)) else None


def _is_resnet(net: object) -> bool:
    return all(hasattr(net, name) for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer4", "avgpool", "fc"))


def _resnet_chain(net: nn.Module) -> list[Node]:
    chain: list[Node] = [(f"backbone.{name}.", getattr(net, name)) for name in ("conv1", "bn1", "relu", "maxpool")]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(net, stage)):
            chain.append(_block(block, f"backbone.{stage}.{i}."))
    return chain + [("backbone.avgpool.", net.avgpool), ("backbone.fc.", net.fc)]


def _block(block: nn.Module, prefix: str) -> Residual:
    """BasicBlock (2 convs) or Bottleneck (3 convs); the block's one ReLU module runs after each inner BN."""
    convs = sorted(name for name, _ in block.named_children() if name.startswith("conv"))
    main: list[Node] = []
    for n, conv in enumerate(convs, start=1):
        main += [(f"{prefix}{conv}.", getattr(block, conv)), (f"{prefix}bn{n}.", getattr(block, f"bn{n}"))]
        if n < len(convs):
            main.append((f"{prefix}relu.", block.relu))
    down = block.downsample if block.downsample is not None else nn.Sequential()
    skip: list[Node] = [(f"{prefix}downsample.{i}.", layer) for i, layer in enumerate(down)]
    return Residual(main, skip, (f"{prefix}relu.", block.relu))


def _leaves(nodes: list[Node]) -> Iterator[Leaf]:
    for node in nodes:
        if isinstance(node, Residual):
            yield from _leaves(node.main)
            yield from _leaves(node.skip)
            yield node.relu
        else:
            yield node


def _supported(leaf: Leaf) -> bool:
    layer = leaf[1]
    if not isinstance(layer, SUPPORTED):
        return False
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return layer.output_size in (1, (1, 1))
    if isinstance(layer, nn.MaxPool2d):
        return layer.dilation in (1, (1, 1)) and not layer.ceil_mode
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros"
    if isinstance(layer, nn.LayerNorm):
        return len(layer.normalized_shape) == 1
    if isinstance(layer, nn.GELU):
        return layer.approximate == "none"
    return True


@contextlib.contextmanager
def recording(chain: list[Node]) -> Iterator[list[Tensor]]:
    """Inside the block, each layer's input of the next forward (Dropout's output: it carries the mask) is
    appended, detached, to the yielded list, once per call (a ResNet block calls its ReLU two or three times)."""
    inputs: list[Tensor] = []
    layers = list({id(layer): layer for _, layer in _leaves(chain)}.values())
    handles = [layer.register_forward_hook(lambda module, args, out: inputs.append(out.detach())) if isinstance(layer, nn.Dropout)
               else layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach())) for layer in layers]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def target_gradient(chain: list[Node], inputs: list[Tensor], params: Params, tangent: Params, scale: float) -> Tensor:
    """scale * J g from recorded layer inputs; `params` are the weights the inputs were recorded at."""
    expected = sum(1 for _ in _leaves(chain))
    if len(inputs) != expected:
        raise ValueError(f"recorded {len(inputs)} layer inputs for {expected} layers")
    t = _walk(chain, iter(inputs), None, params, tangent)  # the data has no tangent
    head_prefix, _ = chain[-1]
    logits = F.linear(inputs[-1], params[head_prefix + "weight"], params.get(head_prefix + "bias"))
    assert t is not None
    probs = logits.softmax(-1)
    return scale * (t - (probs * t).sum(-1, keepdim=True))


def _walk(nodes: list[Node], recorded: Iterator[Tensor], t: Tensor | None, params: Params, tangent: Params) -> Tensor | None:
    for node in nodes:
        if isinstance(node, Residual):
            main = _walk(node.main, recorded, t, params, tangent)
            skip = _walk(node.skip, recorded, t, params, tangent) if node.skip else t
            summed = main if skip is None else skip if main is None else main + skip
            t = None if summed is None else _relu_tangent(summed, next(recorded))
            continue
        prefix, layer = node
        t = _layer_tangent(layer, next(recorded), t, _under(params, prefix), _under(tangent, prefix))
    return t


def _under(values: Params, prefix: str) -> Params:
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def _layer_tangent(layer: nn.Module, x: Tensor, t: Tensor | None, p: Params, g: Params) -> Tensor | None:
    if isinstance(layer, nn.Conv2d):
        conv = lambda inp, w: F.conv2d(inp, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)  # noqa: E731
        out = conv(x, g["weight"].to(x.dtype))
        if t is not None:
            out = out + conv(t, p["weight"])
        return out + g["bias"].view(1, -1, 1, 1) if "bias" in g else out
    if isinstance(layer, nn.Linear):  # a ResNet flattens between its pooling and its head
        out = F.linear(x, g["weight"].to(x.dtype), g.get("bias"))
        return out if t is None else out + F.linear(t.flatten(1) if t.ndim > x.ndim else t, p["weight"])
    if isinstance(layer, nn.Identity):
        return t
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
        return _relu_tangent(t, x)
    if isinstance(layer, nn.MaxPool2d):
        _, index = F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, 1, False, return_indices=True)
        return t.flatten(2).gather(2, index.flatten(2)).view(index.shape)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return t.mean((2, 3), keepdim=True)
    return t.flatten(layer.start_dim, layer.end_dim)  # nn.Flatten


def _relu_tangent(t: Tensor, x: Tensor) -> Tensor:
    """t where x > 0, else 0: the kernel of ReLU's backward, one pass with no mask tensor (x may be the ReLU's
    output, as an in-place ReLU leaves it; the sign test is the same)."""
    return torch.ops.aten.threshold_backward(t, x, 0.0)


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
