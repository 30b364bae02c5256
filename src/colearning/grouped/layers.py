"""The rules for submodule calls (see :mod:`colearning.grouped.rule`), and their kernels.

A member's layers run for all n members at once: convolutions as grouped convolutions
(groups = n) or batched matmuls, linear layers as batched matmuls, BatchNorm as one
BatchNorm over n*C channels, activations, pooling and dropout on the wide map as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colearning.errors import ConfigError
from colearning.grouped.layouts import (
    CHANNELS,
    FEATURES,
    INPUTS,
    POINTS,
    Wide,
    as_map,
    as_members,
    elementwise,
    flatten,
    flattened,
    to_features,
)
from colearning.grouped.rule import Check, LayerRule, Pass

# Modules that act elementwise: the same on any layout.
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Identity, nn.Dropout,
)
# Modules that act per channel on a feature map (channels layout only).
CHANNEL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                   nn.Dropout2d)
# The layer types with a rule of their own.
LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten)


class Conv(LayerRule):
    """nn.Conv2d (any stride, padding, dilation, groups; zero padding): a grouped
    convolution (groups = n), or a batched matmul when its kernel covers its input."""

    types, weighted = (nn.Conv2d,), True

    def check_layer(self, where: str, layer: nn.Conv2d, layout: str) -> Check:
        if layer.padding_mode != "zeros":
            return f"convolution {where} pads with {layer.padding_mode!r}, not zeros", ""
        if layout == FEATURES:
            return f"convolution {where} comes after Flatten", ""
        return "", CHANNELS

    def run_layer(self, p: Pass, name: str, layer: nn.Conv2d, value: Wide) -> Wide:
        value = as_map(value)
        n, x = p.n, value.tensor
        weight = p.params[f"{name}.weight"]  # [n, O, I/g, k, k]
        bias = p.params.get(f"{name}.bias")
        if value.layout == CHANNELS and _spans_input(layer, x):
            # A kernel covering the whole map is a linear layer on the flattened map: one
            # batched matmul instead of a grouped convolution (LeNet-5's conv3; faster
            # forward and backward on CPU, docs/performance.md).
            features = to_features(x, n, CHANNELS)  # [n, B, C*k*k], per-member order
            return Wide(_batched_linear(features, weight.reshape(n, weight.shape[1], -1),
                                        bias), POINTS)
        out_channels = weight.shape[1]
        weight = weight.reshape(n * out_channels, *weight.shape[2:])
        bias = None if bias is None else bias.reshape(-1)
        stride = layer.stride
        if strided_pointwise(layer):
            # A strided 1x1 convolution reads every s-th pixel: subsample, then convolve
            # with stride 1. The same numbers, and it avoids oneDNN's strided 1x1 backward,
            # whose weight gradient on channels-last inputs with < 8 input channels is wrong
            # on this project's CPUs (PyTorch 2.13; see docs/guide.md, "Known issues").
            x = x[..., ::stride[0], ::stride[1]]
            stride = (1, 1)
        if value.layout != INPUTS:
            return Wide(F.conv2d(x, weight, bias, stride, layer.padding, layer.dilation,
                                 layer.groups * n), CHANNELS)
        r = value.r
        if layer.groups > 1 and r > 1:
            # Member-major output channels of a grouped first convolution need the input
            # groups in member-major order too: one copy per member.
            x, r = x.repeat_interleave(r, dim=0), 1
        if x.device.type == "cpu" and x.shape[0] > 1 and layer.groups == 1:
            # oneDNN's grouped convolution over K' batches of 3-channel images ran slower
            # than K' dense ones (LeNet-5, batch 512; docs/performance.md): one per batch.
            size = r * out_channels
            return Wide(torch.cat([
                F.conv2d(x[k], weight[k * size:(k + 1) * size],
                         None if bias is None else bias[k * size:(k + 1) * size],
                         stride, layer.padding, layer.dilation)
                for k in range(x.shape[0])], dim=1), CHANNELS)
        # [K', B, C, H, W] -> [B, K'*C, H, W]: group k of the convolution is batch k's r
        # members (one wide convolution when all members share one batch).
        groups = layer.groups * x.shape[0]
        x = x[0] if x.shape[0] == 1 else x.transpose(0, 1).flatten(1, 2)
        if x.device.type == "cpu":  # oneDNN: faster channels-last (docs/performance.md)
            x = x.contiguous(memory_format=torch.channels_last)
        return Wide(F.conv2d(x, weight, bias, stride, layer.padding, layer.dilation, groups),
                    CHANNELS)


class Linear(LayerRule):
    """nn.Linear: a batched matmul (on the shared input: one per batch of r members)."""

    types, weighted = (nn.Linear,), True

    def check_layer(self, where: str, layer: nn.Linear, layout: str) -> Check:
        if layout == CHANNELS:
            return f"linear layer {where} has no flatten before it", ""
        return "", FEATURES

    def run_layer(self, p: Pass, name: str, layer: nn.Linear, value: Wide) -> Wide:
        weight = p.params[f"{name}.weight"]  # [n, O, I]
        bias = p.params.get(f"{name}.bias")  # [n, O]
        x = value.tensor
        # Refused here, not by the check, which sees no ranks: an image input, or one that
        # became a map in a sum with its own dropout (the check still counts it as inputs).
        if value.layout == INPUTS:
            if x.dim() != 3:
                raise ConfigError(f"linear layer {name} gets a {x.dim() - 1}-d input; the "
                                  "grouped strategy needs a flatten before it (or use 'loop')")
            # batch k's r members as one matmul: [K', B, I] @ [K', I, r*O]
            blocks = weight.reshape(x.shape[0], value.r * weight.shape[1], weight.shape[2])
            out = torch.bmm(x, blocks.transpose(1, 2))  # [K', B, r*O]
            out = out.reshape(x.shape[0], x.shape[1], value.r, -1).transpose(1, 2).flatten(0, 1)
            return Wide(out if bias is None else out + bias.unsqueeze(1), FEATURES)
        if value.layout == CHANNELS:
            raise ConfigError(f"linear layer {name} needs a flatten before it")
        return Wide(_batched_linear(x, weight, bias), FEATURES)


class BatchNorm(LayerRule):
    """nn.BatchNorm1d/2d (affine, running statistics): one BatchNorm over n*C channels."""

    types = (nn.BatchNorm1d, nn.BatchNorm2d)

    def check_layer(self, where: str, layer: nn.Module, layout: str) -> Check:
        if not (layer.affine and layer.track_running_stats):
            return f"BatchNorm {where} is not affine with running statistics", ""
        if layout == INPUTS:
            return f"BatchNorm {where} comes before any weight layer", ""
        if isinstance(layer, nn.BatchNorm2d) and layout == FEATURES:
            return f"BatchNorm2d {where} comes after Flatten", ""
        if isinstance(layer, nn.BatchNorm1d) and layout == CHANNELS:
            return f"BatchNorm1d {where} gets a feature map (no Flatten before it)", ""
        return "", layout

    def run_layer(self, p: Pass, name: str, layer: nn.Module, value: Wide) -> Wide:
        value = as_members(value)
        layout = FEATURES if value.layout == POINTS else value.layout
        out = _grouped_batch_norm(layer, name, p.params, p.buffers, value.tensor, p.n,
                                  layout, p.training)
        return Wide(out, value.layout)


class Flatten(LayerRule):
    """nn.Flatten() (dims 1..-1): a map's per-member flatten order."""

    types = (nn.Flatten,)

    def check_layer(self, where: str, layer: nn.Flatten, layout: str) -> Check:
        if (layer.start_dim, layer.end_dim) != (1, -1):
            return f"Flatten {where} does not flatten dims 1..-1", ""
        return "", flattened(layout)

    def run_layer(self, p: Pass, name: str, layer: nn.Flatten, value: Wide) -> Wide:
        return flatten(value, p.n)


class ChannelLayer(LayerRule):
    """Pooling and Dropout2d modules: per channel of a feature map."""

    types = CHANNEL_MODULES

    def check_layer(self, where: str, layer: nn.Module, layout: str) -> Check:
        if layout == FEATURES:
            return f"{type(layer).__name__} {where} comes after Flatten", ""
        return "", layout

    def run_layer(self, p: Pass, name: str, layer: nn.Module, value: Wide) -> Wide:
        return elementwise(_own_dropout(p, layer, as_map(value)), layer)


class ElementwiseLayer(LayerRule):
    """Activation, identity and dropout modules: per value, on any layout."""

    types = ELEMENTWISE_MODULES

    def check_layer(self, where: str, layer: nn.Module, layout: str) -> Check:
        return "", layout

    def run_layer(self, p: Pass, name: str, layer: nn.Module, value: Wide) -> Wide:
        return elementwise(_own_dropout(p, layer, value), layer)


class UnsupportedLayer(LayerRule):
    """Any other submodule: refused."""

    types = (nn.Module,)

    def check_layer(self, where: str, layer: nn.Module, layout: str) -> Check:
        return (f"layer {where or 'the member'} ({type(layer).__name__}) is not supported by "
                "the grouped strategy (Conv2d, Linear, BatchNorm, activations, pooling, "
                "flatten, dropout, residual add, concatenation)"), ""


def _own_dropout(p: Pass, layer: nn.Module, value: Wide) -> Wide:
    """Dropout on an input that members share would draw one mask for all of them: each
    member gets its own copy, so each draws its own (as loop and vmap do)."""
    if value.layout == INPUTS and p.training and isinstance(layer, (nn.Dropout, nn.Dropout2d)):
        return Wide(value.tensor.repeat_interleave(value.r, dim=0), INPUTS, 1)
    return value


# In the order tried (UnsupportedLayer takes any other submodule call).
LAYER_RULES: tuple[LayerRule, ...] = (
    Conv(), Linear(), BatchNorm(), Flatten(), ChannelLayer(), ElementwiseLayer(),
    UnsupportedLayer(),
)


# --------------------------------------------------------------------- kernels
def strided_pointwise(layer: nn.Conv2d) -> bool:
    """A 1x1 convolution with stride > 1 and no padding or dilation."""
    return (tuple(layer.kernel_size) == (1, 1) and tuple(layer.stride) != (1, 1)
            and layer.padding in ((0, 0), "valid") and tuple(layer.dilation) == (1, 1))


def _spans_input(layer: nn.Conv2d, x: torch.Tensor) -> bool:
    """True when the convolution's kernel covers its whole unpadded input (1x1 output)."""
    return (layer.groups == 1 and layer.padding in ((0, 0), "valid")
            and layer.dilation == (1, 1) and tuple(x.shape[2:]) == tuple(layer.kernel_size))


def _batched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x [n, B, I] @ weight [n, O, I]^T + bias [n, O] -> [n, B, O]."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _grouped_batch_norm(layer: nn.Module, name: str, params: dict[str, torch.Tensor],
                        buffers: dict[str, torch.Tensor], x: torch.Tensor, n: int,
                        layout: str, training: bool) -> torch.Tensor:
    """BatchNorm of every member as one BatchNorm over N*C channels (statistics per channel)."""
    tracked = buffers[f"{name}.num_batches_tracked"]
    momentum = layer.momentum
    if training:
        tracked.add_(1)
        if momentum is None:  # cumulative moving average, as nn.BatchNorm does
            momentum = 1.0 / float(tracked[0])
    features_layout = layout == FEATURES
    if features_layout:  # [N, B, F] -> [B, N*F]
        batch = x.shape[1]
        x = x.transpose(0, 1).reshape(batch, -1)
    out = F.batch_norm(
        x,
        buffers[f"{name}.running_mean"].view(-1),
        buffers[f"{name}.running_var"].view(-1),
        params[f"{name}.weight"].reshape(-1),
        params[f"{name}.bias"].reshape(-1),
        training,
        momentum if momentum is not None else 0.0,
        layer.eps,
    )
    if features_layout:
        out = out.reshape(out.shape[0], n, -1).transpose(0, 1)
    return out
