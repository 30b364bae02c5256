"""The rules for function and method calls (see :mod:`colearning.grouped.rule`), and
:data:`RULES`, every rule in the order tried: :func:`rule_for` picks a node's rule for the
construction check and the run alike.

Supported: elementwise activation functions and methods, functional pooling, ``+ - * /``
between activations of one kind (residual connections) or with numbers, torch.cat along
channels, flatten(x, 1) / ``x.view(x.size(0), -1)`` (or ``x.shape[0]``), and the spatial
mean ``x.mean((2, 3))``. The last two rules only refuse.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from colearning.grouped.layers import LAYER_RULES
from colearning.grouped.layouts import (
    BATCH,
    CHANNELS,
    FEATURES,
    INPUTS,
    SHAPE,
    BatchShape,
    Wide,
    as_map,
    as_members,
    batch_size,
    elementwise,
    flatten,
    flattened,
)
from colearning.grouped.rule import Check, Modules, Pass, Rule, first_layout, target_name

ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    torch.tanh, torch.sigmoid, F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus,
    torch.nn.functional.tanh, torch.nn.functional.sigmoid,
}
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "clone", "contiguous"}
CHANNEL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv,
                    torch.add, torch.sub, torch.mul, torch.div}
BINARY_METHODS = {"add", "sub", "mul", "div"}
CONCAT_FUNCTIONS = {torch.cat, torch.concat}
FLATTEN_TARGETS = (torch.flatten, "flatten", "view", "reshape")


def _target_in(node: fx.Node, functions: Any, methods: Any = ()) -> bool:
    return node.target in functions or (node.op == "call_method" and node.target in methods)


class Shape(Rule):
    """``x.shape``, read only as ``x.shape[0]``."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return (node.op == "call_function" and node.target is getattr
                and node.args[1] == "shape"
                and all(is_batch_size(user) for user in node.users))

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        return "", SHAPE

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        return BatchShape(batch_size(args[0]))


class BatchSize(Rule):
    """``x.size(0)`` or ``x.shape[0]``."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return is_batch_size(node)

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        return "", BATCH

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        return args[0][0] if isinstance(args[0], BatchShape) else batch_size(args[0])


class Elementwise(Rule):
    """Activation functions and methods, clone, contiguous: per value, on any layout."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return _target_in(node, ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS)

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        return "", first_layout(layouts)

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        return _call(node.target, args[0], args, kwargs)


class ChannelFunction(Rule):
    """Functional pooling: per channel of a feature map."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return node.target in CHANNEL_FUNCTIONS

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        if first_layout(layouts) == FEATURES:
            return f"{target_name(node.target)} comes after Flatten", ""
        return "", first_layout(layouts)

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        return _call(node.target, as_map(args[0]), args, kwargs)


def _call(target: Any, value: Wide, args: tuple, kwargs: dict) -> Wide:
    """target(value, *args[1:], **kwargs), per value or per channel."""
    fn = getattr(torch.Tensor, target) if isinstance(target, str) else target
    return elementwise(value, lambda t: fn(t, *args[1:], **kwargs))


class Binary(Rule):
    """``+ - * /`` between two activations of one kind (residual connections) or with
    numbers."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return _target_in(node, BINARY_FUNCTIONS, BINARY_METHODS)

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        return _merge(layouts, target_name(node.target))

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        wide = [a for a in args if isinstance(a, Wide)]
        if len(wide) == 2 and (wide[0].layout, wide[0].r) != (wide[1].layout, wide[1].r):
            wide = [as_map(as_members(w)) for w in wide]
        it = iter(wide)
        values = [next(it).tensor if isinstance(a, Wide) else a for a in args]
        target = node.target
        fn = getattr(torch.Tensor, target) if isinstance(target, str) else target
        return Wide(fn(*values, **kwargs), wide[0].layout, wide[0].r)


class Concat(Rule):
    """torch.cat of activations of one kind along channels (or features)."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return node.target in CONCAT_FUNCTIONS

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        problem, merged = _merge(layouts, "torch.cat")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        rank = 2 if merged == FEATURES else 4
        if not problem and (not isinstance(dim, int) or dim % rank != 1):
            problem = f"torch.cat along dim {dim}, not along channels/features (dim 1)"
        return problem, merged

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        values = [as_map(as_members(v)) for v in args[0]]
        if values[0].layout == FEATURES:
            return Wide(torch.cat([v.tensor for v in values], dim=-1), FEATURES)
        parts = [v.tensor.unflatten(1, (p.n, -1)) for v in values]  # [B, n, C_k, H, W]
        return Wide(torch.cat(parts, dim=2).flatten(1, 2), CHANNELS)


def _merge(layouts: list[str], what: str) -> Check:
    """(problem, layout) of an operation combining activations of these layouts."""
    kinds = {layout for layout in layouts if layout != INPUTS}
    if len(kinds) > 1:
        return f"{what} combines a feature map with flat features", ""
    return "", kinds.pop() if kinds else INPUTS


class FlattenFunction(Rule):
    """torch.flatten(x, 1), x.flatten(1), x.view/reshape(x.size(0), -1) (or x.shape[0])."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return node.target in FLATTEN_TARGETS

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        if not _is_batch_flatten(node):
            return (f"{target_name(node.target)} reshapes other than flatten(x, 1) or "
                    "x.view(x.size(0), -1)"), ""
        return "", flattened(first_layout(layouts))

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        return flatten(args[0], p.n)


class SpatialMean(Rule):
    """``x.mean((2, 3))`` of a feature map (keepdim or not)."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return node.op == "call_method" and node.target == "mean"

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        layout = first_layout(layouts)
        rank = 2 if layout == FEATURES else 4
        dims = _dims(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None),
                     rank)
        if layout != CHANNELS or dims != {2, 3}:
            return "mean over other than the spatial dims (2, 3) of a feature map", ""
        return "", CHANNELS if _keepdim(node.args, node.kwargs) else FEATURES

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        keepdim = _keepdim(args, kwargs)
        out = as_map(as_members(args[0])).tensor.mean((2, 3), keepdim=keepdim)
        if keepdim:
            return Wide(out, CHANNELS)
        return Wide(out.reshape(out.shape[0], p.n, -1).transpose(0, 1), FEATURES)


def _keepdim(args: tuple, kwargs: dict) -> Any:
    return kwargs.get("keepdim", args[2] if len(args) > 2 else False)


def _dims(dims: Any, rank: int) -> set[int] | None:
    """The dims of a reduction as a set of non-negative ints (None when not ints)."""
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    if not all(isinstance(d, int) for d in dims):
        return None
    return {d % rank for d in dims}


class FunctionalDropout(Rule):
    """F.dropout in forward: refused (traced once, it keeps the mode it was traced in)."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return node.target in (F.dropout, F.dropout2d, F.alpha_dropout)

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        where = target_name(node.target)
        return (f"{where} in forward bakes in the traced train/eval mode; use nn.Dropout "
                "modules"), ""


class UnsupportedOperation(Rule):
    """Any other call: refused."""

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return True

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        where = target_name(node.target)
        return f"operation {where} is not supported by the grouped strategy", ""


# In the order tried: the first rule that matches a node is its rule (the layers'
# first: their last rule takes every other submodule call).
RULES: tuple[Rule, ...] = (
    *LAYER_RULES,
    Shape(), BatchSize(), Elementwise(), ChannelFunction(), Binary(), Concat(),
    FlattenFunction(), SpatialMean(), FunctionalDropout(), UnsupportedOperation(),
)


def rule_for(node: fx.Node, modules: Modules) -> Rule:
    """The rule of a call node (call_module, call_function or call_method)."""
    return next(rule for rule in RULES if rule.matches(node, modules))


# --------------------------------------------------------------------- graph patterns
def is_batch_size(arg: Any) -> bool:
    """``x.size(0)`` or ``x.shape[0]``."""
    if not isinstance(arg, fx.Node):
        return False
    if arg.op == "call_method" and arg.target == "size":
        return len(arg.args) == 2 and arg.args[1] == 0
    if arg.op == "call_function" and arg.target is operator.getitem:
        source = arg.args[0]
        return (arg.args[1] == 0 and isinstance(source, fx.Node)
                and source.op == "call_function" and source.target is getattr
                and source.args[1] == "shape")
    return False


def _is_batch_flatten(node: fx.Node) -> bool:
    """flatten(x, 1), x.flatten(1) or x.view/reshape(x.size(0), -1) (x.shape[0] too)."""
    args = list(node.args[1:])
    if node.target in (torch.flatten, "flatten"):
        start = node.kwargs.get("start_dim", args[0] if args else 0)
        end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
        return start == 1 and end == -1
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = list(args[0])
    return len(args) == 2 and args[1] == -1 and is_batch_size(args[0])


