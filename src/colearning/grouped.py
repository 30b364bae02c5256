"""The grouped strategy: N members of one architecture run as one wide network.

A member is traced once with torch.fx (:class:`WideProgram`); its graph then runs with
every member's stacked parameters at once, each activation held in a *wide layout* that
holds all members side by side:

- ``inputs``: before the first weight layer, the batches [K', B, ...] the members read
  (member m reads batch m // r, see :func:`_input_blocks`); one batch for a plain ensemble.
- ``channels``: a feature map [B, n*C, H, W], channels member-major. Convolutions are
  grouped convolutions (groups = n), BatchNorm is one BatchNorm over n*C channels, and
  every per-channel operation (activations, pooling, dropout, residual adds of two such
  maps) acts on it exactly as on each member's own map.
- ``points``: a [B, n*C, 1, 1] map held as [n, B, C] (a convolution whose kernel covers
  its whole input is a batched matmul, e.g. LeNet-5's conv3).
- ``features``: [n, B, F]; linear layers are batched matmuls.

Supported graph nodes: nn.Conv2d (any stride, padding, dilation, groups; zero padding),
nn.Linear, nn.BatchNorm1d/2d (affine, running statistics), elementwise activation modules
and functions, max/avg/adaptive pooling, nn.Flatten / torch.flatten / ``x.view(x.size(0),
-1)``, dropout modules, ``+ - * /`` between activations (residual connections) or with
numbers, torch.cat along channels, and the spatial mean ``x.mean((2, 3))``. Anything
else (another layer type, a parameter used outside a layer, control flow fx cannot trace)
is reported by :func:`wide_program` and the ensemble falls back to another strategy.

The graph is traced once, in whatever mode the member was in: a forward that branches on
``self.training`` (or calls F.dropout with ``training=self.training``) would bake that
branch in, so dropout must be a module (nn.Dropout), which follows train/eval mode here.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from colearning.errors import ConfigError

# Modules that act elementwise: the same on any layout.
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Identity, nn.Dropout,
)
# Modules that act per channel on a feature map (channels layout only).
CHANNEL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                   nn.Dropout2d)
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
LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten)


class Wide(NamedTuple):
    """An activation of all members: ``tensor`` in ``layout``; ``r`` members per batch
    (``inputs`` layout only)."""

    tensor: torch.Tensor
    layout: str
    r: int = 1


def _name(target: Any) -> str:
    return getattr(target, "__name__", None) or str(target)


def _flat_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)
    return found


def _dims(dims: Any, rank: int) -> set[int] | None:
    """The dims of a reduction as a set of non-negative ints (None when not ints)."""
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    if not all(isinstance(d, int) for d in dims):
        return None
    return {d % rank for d in dims}


def _is_batch_flatten(node: fx.Node) -> bool:
    """flatten(x, 1), x.flatten(1) or x.view/reshape(x.size(0), -1) (x.shape[0] too)."""
    args = list(node.args[1:])
    if node.target in (torch.flatten, "flatten"):
        start = node.kwargs.get("start_dim", args[0] if args else 0)
        end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
        return start == 1 and end == -1
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = list(args[0])
    return len(args) == 2 and args[1] == -1 and _is_batch_size(args[0])


def _is_batch_size(arg: Any) -> bool:
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


def _is_shape(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target is getattr and node.args[1] == "shape"
            and all(_is_batch_size(user) for user in node.users))


class WideProgram:
    """A member's traced graph, run for n members at once (see the module docstring).

    Build it with :func:`wide_program`, which reports why a member cannot run this way.
    """

    def __init__(self, member: nn.Module) -> None:
        graph = fx.Tracer().trace(member)
        self.modules = dict(member.named_modules())
        problem = _graph_problem(graph, self.modules)
        if problem:
            raise _Unsupported(problem)
        self.traced = fx.GraphModule(member, graph)
        self.graph = _pool_before_relu(fx.Tracer().trace(member), self.modules)
        self._last_use = _last_uses(self.graph)
        self.uses_view = any(node.op == "call_method" and node.target == "view"
                             for node in graph.nodes)
        # oneDNN (PyTorch 2.13, CPU) computes a wrong weight gradient for strided 1x1
        # convolutions with few input channels on channels-last maps (README, "Known
        # issues"): members with one run channels-first in the loop and vmap strategies.
        self.narrow_strided_pointwise = any(
            isinstance(m, nn.Conv2d) and _strided_pointwise(m) and m.in_channels // m.groups < 16
            for m in self.modules.values())
        conv_widths = [m.out_channels for m in self.modules.values() if isinstance(m, nn.Conv2d)]
        self.narrowest_conv = min(conv_widths) if conv_widths else None

    def layers(self) -> list[str]:
        """The module types in the order the program runs them (for tests and repr)."""
        return [type(self.modules[n.target]).__name__ for n in self.graph.nodes
                if n.op == "call_module"]

    @torch.no_grad()
    def widest_activation(self, shape: tuple[int, ...]) -> int:
        """Largest number of values per image one member's node outputs, for inputs shape."""
        # The member's layers live on the meta device: shapes only. A batch of 2 keeps
        # BatchNorm's training-mode check (more than one value per channel) quiet.
        widest = 0

        class Shapes(fx.Interpreter):
            def run_node(self, node: fx.Node) -> Any:
                nonlocal widest
                out = super().run_node(node)
                if isinstance(out, torch.Tensor) and out.dim() > 0:
                    widest = max(widest, out[0].numel())
                return out

        Shapes(self.traced).run(torch.empty((2, *shape), device="meta"))
        return widest

    def run(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
            x: torch.Tensor, inputs: tuple[int, ...], training: bool) -> torch.Tensor:
        """Logits [n, B, C] of n members (stacked params/buffers [n, ...]); member m reads
        x[inputs[m]] of x [K, B, ...]."""
        n = len(inputs)
        run = _Run(self.modules, params, buffers, n, training)
        env: dict[fx.Node, Any] = {}
        for node in self.graph.nodes:
            if node.op == "placeholder":
                blocks, r = _input_blocks(x, inputs)
                env[node] = Wide(blocks, "inputs", r)
            elif node.op == "output":
                out = env[node.args[0]]
                if out.layout == "inputs":
                    raise ConfigError("the member has no parameterized layer; nothing to "
                                      "ensemble")
                return _to_features(out.tensor, n, out.layout)
            else:
                args = fx.node.map_arg(node.args, env.__getitem__)
                kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
                env[node] = run.node(node, args, kwargs)
            for done in self._last_use.get(node, ()):
                del env[done]  # free activations autograd does not keep
        raise ConfigError("the member's graph has no output")


class _Unsupported(Exception):
    pass


def wide_program(member: nn.Module) -> tuple[WideProgram | None, str]:
    """(the program, "") when the grouped strategy can run ``member``, else (None, why not).

    Decided when the ensemble is built, so that ``auto`` falls back to another strategy
    instead of failing at the first forward pass.
    """
    try:
        return WideProgram(member), ""
    except _Unsupported as error:
        return None, str(error)
    except Exception as error:  # noqa: BLE001 - whatever fx raises: cannot trace
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"torch.fx cannot trace the member ({first})"


def _last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """node -> the values whose last reader it is."""
    order = {node: k for k, node in enumerate(graph.nodes)}
    last: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        for arg in _flat_args(node):
            if order[node] >= order.get(last.get(arg), -1):
                last[arg] = node
    out: dict[fx.Node, list[fx.Node]] = {}
    for value, reader in last.items():
        if reader.op != "output":
            out.setdefault(reader, []).append(value)
    return out


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    return node.op == "call_function" and node.target in (F.relu, torch.relu)


def _pool_before_relu(graph: fx.Graph, modules: dict[str, nn.Module]) -> fx.Graph:
    """The graph with every ReLU -> MaxPool2d pair (the ReLU read by the pool only) run as
    MaxPool2d -> ReLU.

    max and ReLU commute (ReLU is monotonic), so the values are identical and so are the
    gradients (a window whose maximum is <= 0 passes no gradient either way); pooling first
    runs the ReLU and its backward on 4x fewer values, a large share of LeNet-5's CPU time.
    """
    for relu in list(graph.nodes):
        if not _is_relu(relu, modules) or len(relu.users) != 1:
            continue
        pool = next(iter(relu.users))
        if not (pool.op == "call_module" and isinstance(modules[pool.target], nn.MaxPool2d)
                and pool.args == (relu,) and not pool.kwargs):
            continue
        pool.replace_all_uses_with(relu)
        pool.args = (relu.args[0],)
        relu.args = (pool, *relu.args[1:])
        pool.append(relu)  # the ReLU now runs after the pool
    graph.lint()
    return graph


# --------------------------------------------------------------------- construction check
def _graph_problem(graph: fx.Graph, modules: dict[str, nn.Module]) -> str:
    """Why the graph cannot run in the wide layouts ("" when it can).

    Tracks each value's layout symbolically: ``shared`` (the input, the same for every
    member), ``spatial`` (a feature map), ``features`` ([B, F] per member) or ``batch``
    (the batch size, from x.size(0)).
    """
    layouts: dict[fx.Node, str] = {}
    weighted = False
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        return f"the member takes {len(placeholders)} inputs, not one"
    for node in graph.nodes:
        if node.op == "placeholder":
            layouts[node] = "shared"
            continue
        if node.op == "output":
            value = node.args[0]
            if not isinstance(value, fx.Node) or layouts.get(value) != "features":
                return ("the member's output is not one [B, C] tensor computed by its layers "
                        "(a feature map needs a flatten or pooling to [B, C])")
            break
        if node.op == "get_attr":
            return (f"the member reads {node.target} directly in forward (parameters and "
                    "buffers must belong to supported layers)")
        inputs = [layouts[arg] for arg in _flat_args(node) if arg in layouts]
        problem, layout = _node_layout(node, modules, inputs)
        if problem:
            return problem
        weighted |= node.op == "call_module" and isinstance(
            modules[node.target], (nn.Conv2d, nn.Linear))
        layouts[node] = layout
    if not weighted:
        return "the member has no parameterized layer"
    return ""


def _merge(layouts: list[str], what: str) -> tuple[str, str]:
    """(problem, layout) of an operation combining activations of these layouts."""
    kinds = {layout for layout in layouts if layout != "shared"}
    if len(kinds) > 1:
        return f"{what} combines a feature map with flat features", ""
    return "", kinds.pop() if kinds else "shared"


def _node_layout(node: fx.Node, modules: dict[str, nn.Module],
                 inputs: list[str]) -> tuple[str, str]:
    """(problem, output layout) of one node given its inputs' layouts."""
    where = node.target if node.op == "call_module" else _name(node.target)
    layout = inputs[0] if inputs else "shared"
    if node.op == "call_module":
        layer = modules[node.target]
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                return f"convolution {where} pads with {layer.padding_mode!r}, not zeros", ""
            if layout == "features":
                return f"convolution {where} comes after Flatten", ""
            return "", "spatial"
        if isinstance(layer, nn.Linear):
            if layout == "spatial":
                return f"linear layer {where} has no flatten before it", ""
            return "", "features"
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not (layer.affine and layer.track_running_stats):
                return f"BatchNorm {where} is not affine with running statistics", ""
            if layout == "shared":
                return f"BatchNorm {where} comes before any weight layer", ""
            if isinstance(layer, nn.BatchNorm2d) and layout == "features":
                return f"BatchNorm2d {where} comes after Flatten", ""
            if isinstance(layer, nn.BatchNorm1d) and layout == "spatial":
                return f"BatchNorm1d {where} gets a feature map (no Flatten before it)", ""
            return "", layout
        if isinstance(layer, nn.Flatten):
            if (layer.start_dim, layer.end_dim) != (1, -1):
                return f"Flatten {where} does not flatten dims 1..-1", ""
            return "", "features" if layout == "spatial" else layout
        if isinstance(layer, CHANNEL_MODULES):
            if layout == "features":
                return f"{type(layer).__name__} {where} comes after Flatten", ""
            return "", layout
        if isinstance(layer, ELEMENTWISE_MODULES):
            return "", layout
        return (f"layer {where or 'the member'} ({type(layer).__name__}) is not supported by "
                "the grouped strategy (Conv2d, Linear, BatchNorm, activations, pooling, "
                "flatten, dropout, residual add, concatenation)"), ""
    if node.op == "call_function" and node.target is getattr and _is_shape(node):
        return "", "shape"
    if _is_batch_size(node):
        return "", "batch"
    target, rank = node.target, 2 if layout == "features" else 4
    if target in ELEMENTWISE_FUNCTIONS or (node.op == "call_method"
                                          and target in ELEMENTWISE_METHODS):
        return "", layout
    if target in CHANNEL_FUNCTIONS:
        return ((f"{where} comes after Flatten", "") if layout == "features" else ("", layout))
    if target in BINARY_FUNCTIONS or (node.op == "call_method" and target in BINARY_METHODS):
        return _merge(inputs, f"{where}")
    if target in CONCAT_FUNCTIONS:
        problem, merged = _merge(inputs, "torch.cat")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        rank = 2 if merged == "features" else 4
        if not problem and (not isinstance(dim, int) or dim % rank != 1):
            problem = f"torch.cat along dim {dim}, not along channels/features (dim 1)"
        return problem, merged
    if target in (torch.flatten, "flatten", "view", "reshape"):
        if not _is_batch_flatten(node):
            return (f"{where} reshapes other than flatten(x, 1) or x.view(x.size(0), -1)",
                    "")
        return "", "features" if layout == "spatial" else layout
    if node.op == "call_method" and target == "mean":
        dims = _dims(node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None),
                     rank)
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if layout != "spatial" or dims != {2, 3}:
            return "mean over other than the spatial dims (2, 3) of a feature map", ""
        return "", "spatial" if keep else "features"
    if target in (F.dropout, F.dropout2d, F.alpha_dropout):
        return (f"{where} in forward bakes in the traced train/eval mode; use nn.Dropout "
                "modules"), ""
    return f"operation {where} is not supported by the grouped strategy", ""


# --------------------------------------------------------------------- running
class _Run:
    """One forward pass of n members through the graph's nodes."""

    def __init__(self, modules: dict[str, nn.Module], params: dict[str, torch.Tensor],
                 buffers: dict[str, torch.Tensor], n: int, training: bool) -> None:
        self.modules, self.params, self.buffers = modules, params, buffers
        self.n, self.training = n, training

    def node(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return self.module(node.target, self.modules[node.target], args[0])
        target = node.target
        if node.op == "call_function" and target is getattr:  # x.shape, read as shape[0]
            return _BatchShape(_batch_size(args[0]))
        if _is_batch_size(node):
            return args[0][0] if isinstance(args[0], _BatchShape) else _batch_size(args[0])
        if target in (torch.flatten, "flatten", "view", "reshape"):
            return self.flatten(args[0])
        if target in CONCAT_FUNCTIONS:
            return self.concat(list(args[0]))
        if target in BINARY_FUNCTIONS or target in BINARY_METHODS:
            return self.binary(target, args, kwargs)
        if target == "mean":
            return self.spatial_mean(args[0], kwargs.get(
                "keepdim", args[2] if len(args) > 2 else False))
        value = args[0]
        if target in CHANNEL_FUNCTIONS:
            value = self.as_map(value)
        fn = getattr(torch.Tensor, target) if isinstance(target, str) else target
        return self.elementwise(value, lambda t: fn(t, *args[1:], **kwargs))

    # -- layouts
    def as_members(self, value: Wide) -> Wide:
        """An ``inputs`` value as every member's copy (channels or features layout)."""
        if value.layout != "inputs":
            return value
        t = value.tensor.repeat_interleave(value.r, dim=0) if value.r > 1 else value.tensor
        if t.dim() == 5:  # [n, B, C, H, W] -> [B, n*C, H, W]
            return Wide(t.transpose(0, 1).flatten(1, 2), "channels")
        return Wide(t, "features")

    def as_map(self, value: Wide) -> Wide:
        """A ``points`` value ([n, B, C]) as the [B, n*C, 1, 1] map it stands for."""
        if value.layout != "points":
            return value
        t = value.tensor
        return Wide(t.transpose(0, 1).reshape(t.shape[1], -1, 1, 1), "channels")

    def elementwise(self, value: Wide, fn: Any) -> Wide:
        if value.layout == "inputs":  # [K', B, ...] as one batch of K' * B
            t = value.tensor
            return Wide(fn(t.flatten(0, 1)).unflatten(0, t.shape[:2]), "inputs", value.r)
        return Wide(fn(value.tensor), value.layout, value.r)

    def binary(self, target: Any, args: tuple, kwargs: dict) -> Wide:
        wide = [a for a in args if isinstance(a, Wide)]
        if len(wide) == 2 and (wide[0].layout, wide[0].r) != (wide[1].layout, wide[1].r):
            wide = [self.as_map(self.as_members(w)) for w in wide]
        it = iter(wide)
        values = [next(it).tensor if isinstance(a, Wide) else a for a in args]
        fn = getattr(torch.Tensor, target) if isinstance(target, str) else target
        return Wide(fn(*values, **kwargs), wide[0].layout, wide[0].r)

    def concat(self, values: list[Wide]) -> Wide:
        values = [self.as_map(self.as_members(v)) for v in values]
        if values[0].layout == "features":
            return Wide(torch.cat([v.tensor for v in values], dim=-1), "features")
        parts = [v.tensor.unflatten(1, (self.n, -1)) for v in values]  # [B, n, C_k, H, W]
        return Wide(torch.cat(parts, dim=2).flatten(1, 2), "channels")

    def flatten(self, value: Wide) -> Wide:
        if value.layout in ("channels", "points"):
            return Wide(_to_features(value.tensor, self.n, value.layout), "features")
        if value.layout == "inputs":
            return Wide(value.tensor.flatten(2), "inputs", value.r)
        return value

    def spatial_mean(self, value: Wide, keepdim: bool) -> Wide:
        value = self.as_map(self.as_members(value))
        out = value.tensor.mean((2, 3), keepdim=keepdim)
        if keepdim:
            return Wide(out, "channels")
        return Wide(out.reshape(out.shape[0], self.n, -1).transpose(0, 1), "features")

    # -- layers
    def module(self, name: str, layer: nn.Module, value: Wide) -> Wide:
        if isinstance(layer, nn.Conv2d):
            return self.conv(name, layer, self.as_map(value))
        if isinstance(layer, nn.Linear):
            return self.linear(name, layer, value)
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            value = self.as_members(value)
            layout = "features" if value.layout == "points" else value.layout
            out = _grouped_batch_norm(layer, name, self.params, self.buffers, value.tensor,
                                      self.n, layout, self.training)
            return Wide(out, value.layout)
        if isinstance(layer, nn.Flatten):
            return self.flatten(value)
        if value.layout == "points" and not isinstance(layer, ELEMENTWISE_MODULES):
            value = self.as_map(value)
        if (value.layout == "inputs" and self.training
                and isinstance(layer, (nn.Dropout, nn.Dropout2d))):
            # Dropout on an input that members share would draw one mask for all of them:
            # give each member its own copy, so each draws its own (as loop and vmap do).
            t = value.tensor.repeat_interleave(value.r, dim=0)
            value = Wide(t, "inputs", 1)
        return self.elementwise(value, layer)

    def conv(self, name: str, layer: nn.Conv2d, value: Wide) -> Wide:
        n, x = self.n, value.tensor
        weight = self.params[f"{name}.weight"]  # [n, O, I/g, k, k]
        bias = self.params.get(f"{name}.bias")
        if value.layout == "channels" and _spans_input(layer, x):
            # A kernel covering the whole map is a linear layer on the flattened map: one
            # batched matmul instead of a grouped convolution (LeNet-5's conv3: 6x faster
            # forward and backward on CPU).
            features = _to_features(x, n, "channels")  # [n, B, C*k*k], per-member order
            return Wide(_batched_linear(features, weight.reshape(n, weight.shape[1], -1),
                                        bias), "points")
        out_channels = weight.shape[1]
        weight = weight.reshape(n * out_channels, *weight.shape[2:])
        bias = None if bias is None else bias.reshape(-1)
        stride = layer.stride
        if _strided_pointwise(layer):
            # A strided 1x1 convolution reads every s-th pixel: subsample, then convolve
            # with stride 1. The same numbers, and it avoids oneDNN's strided 1x1 backward,
            # whose weight gradient on channels-last inputs with < 8 input channels is wrong
            # on this project's CPUs (PyTorch 2.13; see README, "Known issues").
            x = x[..., ::stride[0], ::stride[1]]
            stride = (1, 1)
        if value.layout != "inputs":
            return Wide(F.conv2d(x, weight, bias, stride, layer.padding, layer.dilation,
                                 layer.groups * n), "channels")
        r = value.r
        if layer.groups > 1 and r > 1:
            # Member-major output channels of a grouped first convolution need the input
            # groups in member-major order too: one copy per member.
            x, r = x.repeat_interleave(r, dim=0), 1
        if x.device.type == "cpu" and x.shape[0] > 1 and layer.groups == 1:
            # oneDNN's grouped convolution over K' batches of 3-channel images ran 1.6-2x
            # slower than K' dense ones (LeNet-5, batch 512): one per batch.
            size = r * out_channels
            return Wide(torch.cat([
                F.conv2d(x[k], weight[k * size:(k + 1) * size],
                         None if bias is None else bias[k * size:(k + 1) * size],
                         stride, layer.padding, layer.dilation)
                for k in range(x.shape[0])], dim=1), "channels")
        # [K', B, C, H, W] -> [B, K'*C, H, W]: group k of the convolution is batch k's r
        # members (one wide convolution when all members share one batch).
        groups = layer.groups * x.shape[0]
        x = x[0] if x.shape[0] == 1 else x.transpose(0, 1).flatten(1, 2)
        if x.device.type == "cpu":  # oneDNN: ~1.3x faster channels-last (bench)
            x = x.contiguous(memory_format=torch.channels_last)
        return Wide(F.conv2d(x, weight, bias, stride, layer.padding, layer.dilation, groups),
                    "channels")

    def linear(self, name: str, layer: nn.Linear, value: Wide) -> Wide:
        weight = self.params[f"{name}.weight"]  # [n, O, I]
        bias = self.params.get(f"{name}.bias")  # [n, O]
        x = value.tensor
        if value.layout == "inputs":
            if x.dim() != 3:
                raise ConfigError(f"linear layer {name} gets a {x.dim() - 1}-d input; the "
                                  "grouped strategy needs a flatten before it (or use 'loop')")
            # batch k's r members as one matmul: [K', B, I] @ [K', I, r*O]
            blocks = weight.reshape(x.shape[0], value.r * weight.shape[1], weight.shape[2])
            out = torch.bmm(x, blocks.transpose(1, 2))  # [K', B, r*O]
            out = out.reshape(x.shape[0], x.shape[1], value.r, -1).transpose(1, 2).flatten(0, 1)
            return Wide(out if bias is None else out + bias.unsqueeze(1), "features")
        if value.layout == "channels":
            raise ConfigError(f"linear layer {name} needs a flatten before it")
        return Wide(_batched_linear(x, weight, bias), "features")


class _BatchShape(tuple):
    """``x.shape`` as the grouped strategy knows it: the batch size only."""

    def __new__(cls, batch: int) -> _BatchShape:
        return super().__new__(cls, (batch,))


def _batch_size(value: Wide) -> int:
    return value.tensor.shape[0] if value.layout == "channels" else value.tensor.shape[1]


# --------------------------------------------------------------------- helpers
class SplitMembers(torch.autograd.Function):
    """Stacked [N, ...] -> chunks along the member axis, gradient assembled in its layout.

    One copy per parameter in the backward (not p[lo:hi], whose backward adds a zero-filled
    [N, ...] per chunk), into the parameter's own strides: torch.split's backward would
    concatenate contiguously and autograd then copy again into the channels-last kernels.
    """

    @staticmethod
    def forward(ctx: Any, stacked: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
        ctx.sizes = sizes
        ctx.geometry = (stacked.shape, stacked.stride(), stacked.dtype, stacked.device)
        return stacked.split(sizes)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        shape, stride, dtype, device = ctx.geometry
        out = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        for chunk, grad in zip(out.split(ctx.sizes), grads, strict=True):
            chunk.zero_() if grad is None else chunk.copy_(grad)
        return out, None


def chunk_sizes(n_members: int, per_chunk: int) -> list[int]:
    """Balanced chunk sizes summing to n_members, each <= per_chunk: (10, 4) -> [4, 3, 3]."""
    chunks = -(-n_members // per_chunk)
    return [n_members // chunks + (k < n_members % chunks) for k in range(chunks)]


def _strided_pointwise(layer: nn.Conv2d) -> bool:
    """A 1x1 convolution with stride > 1 and no padding or dilation."""
    return (tuple(layer.kernel_size) == (1, 1) and tuple(layer.stride) != (1, 1)
            and layer.padding in ((0, 0), "valid") and tuple(layer.dilation) == (1, 1))


def _spans_input(layer: nn.Conv2d, x: torch.Tensor) -> bool:
    """True when the convolution's kernel covers its whole unpadded input (1x1 output)."""
    return (layer.groups == 1 and layer.padding in ((0, 0), "valid")
            and layer.dilation == (1, 1) and tuple(x.shape[2:]) == tuple(layer.kernel_size))


def _input_blocks(x: torch.Tensor, inputs: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """The batches members read, as ([K', B, ...], r): member m reads batch m // r.

    All members on one batch (a plain ensemble): K' = 1, r = n. Runs of r members on one
    batch each (a pack of equal-sized cells): one batch per run. Anything else: one batch
    per member (r = 1).
    """
    n = len(inputs)
    runs = [inputs[m] for m in range(n) if m == 0 or inputs[m] != inputs[m - 1]]
    r = n // len(runs)
    if r * len(runs) == n and all(inputs[m] == runs[m // r] for m in range(n)):
        selected = runs
    else:
        selected, r = list(inputs), 1
    if selected == list(range(x.shape[0])):
        return x, r
    return x.index_select(0, device_index(tuple(selected), x.device)), r


_INDEX_CACHE: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}


def device_index(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A LongTensor of ``values`` on ``device``, built once: a host-to-device copy at every
    forward pass would make the host wait for the device."""
    key = (values, device)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = torch.tensor(values, dtype=torch.long, device=device)
    return _INDEX_CACHE[key]


def _batched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x [n, B, I] @ weight [n, O, I]^T + bias [n, O] -> [n, B, O]."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _to_features(x: torch.Tensor, n: int, layout: str) -> torch.Tensor:
    """[B, N*C, H, W] -> [N, B, C*H*W] (per-member flatten order); features pass through."""
    if layout in ("features", "points"):
        return x
    batch = x.shape[0]
    return x.reshape(batch, n, -1).transpose(0, 1)


def _grouped_batch_norm(
    layer: nn.Module,
    name: str,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    n: int,
    layout: str,
    training: bool,
) -> torch.Tensor:
    """BatchNorm of every member as one BatchNorm over N*C channels (statistics per channel)."""
    if layout == "inputs":
        raise ConfigError(f"BatchNorm {name} before any parameterized layer is not supported")
    tracked = buffers[f"{name}.num_batches_tracked"]
    momentum = layer.momentum
    if training:
        tracked.add_(1)
        if momentum is None:  # cumulative moving average, as nn.BatchNorm does
            momentum = 1.0 / float(tracked[0])
    features_layout = layout == "features"
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
