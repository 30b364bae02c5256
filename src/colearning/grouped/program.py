"""A member's traced graph, checked once and run for n members at once.

:func:`wide_program` traces the member with torch.fx and checks every node with its rule
(:func:`colearning.grouped.ops.rule_for`), tracking each value's layout; a
:class:`WideProgram` then runs the graph with each node's rule on the wide layouts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from colearning.errors import ConfigError
from colearning.grouped.layers import strided_pointwise
from colearning.grouped.layouts import FEATURES, INPUTS, Wide, input_blocks, to_features
from colearning.grouped.ops import rule_for
from colearning.grouped.rule import Modules, Pass, Rule


class WideProgram:
    """A member's traced graph, run for n members at once (see :mod:`colearning.grouped`).

    Build it with :func:`wide_program`, which reports why a member cannot run this way.
    """

    def __init__(self, member: nn.Module) -> None:
        graph = fx.Tracer().trace(member)
        self.modules = dict(member.named_modules())
        problem = graph_problem(graph, self.modules)
        if problem:
            raise _Unsupported(problem)
        self.traced = fx.GraphModule(member, graph)
        self.graph = _pool_before_relu(fx.Tracer().trace(member), self.modules)
        # Each node's rule, as the check picked it (the rewrite only swaps two nodes).
        rules = {
            node: rule_for(node, self.modules) for node in self.graph.nodes
            if node.op not in ("placeholder", "output")}
        self._steps = _steps(self.graph, rules)
        self.uses_view = any(node.op == "call_method" and node.target == "view"
                             for node in graph.nodes)
        # oneDNN (PyTorch 2.13, CPU) computes a wrong weight gradient for strided 1x1
        # convolutions with few input channels on channels-last maps (docs/guide.md, "Known
        # issues"): members with one run channels-first in the loop and vmap strategies.
        self.narrow_strided_pointwise = any(
            isinstance(m, nn.Conv2d) and strided_pointwise(m) and m.in_channels // m.groups < 16
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
            x: torch.Tensor, member_inputs: tuple[int, ...], training: bool) -> torch.Tensor:
        """Logits [n, B, C] of n members (stacked params/buffers [n, ...]); member m reads
        x[member_inputs[m]] of x [K, B, ...]."""
        n = len(member_inputs)
        p = Pass(self.modules, params, buffers, n, training)
        env: dict[Step, Any] = {}
        for step in self._steps:
            if step.op == "placeholder":
                blocks, r = input_blocks(x, member_inputs)
                env[step] = Wide(blocks, INPUTS, r)
            elif step.op == "output":
                out = env[step.args[0]]  # features: the check refuses any other output
                return to_features(out.tensor, n, out.layout)
            else:
                env[step] = step.rule.run(p, step, _values(step.args, env),
                                          _values(step.kwargs, env))
            for done in step.frees:
                del env[done]  # free activations autograd does not keep
        raise ConfigError("the member's graph has no output")


class Step:
    """One node of the graph as plain fields, what a rule reads when it runs: torch.compile
    does not trace into fx.Node (nor Graph.nodes, fx.node.map_arg) and would break the
    graph at every node. ``args``/``kwargs`` hold Steps where the node's held nodes."""

    def __init__(self, node: fx.Node, rule: Rule | None) -> None:
        self.op, self.target, self.name = node.op, node.target, node.name
        self.rule = rule
        self.args: Any = ()
        self.kwargs: Any = {}
        self.frees: tuple[Step, ...] = ()  # values whose last reader this step is


def _steps(graph: fx.Graph, rules: dict[fx.Node, Rule]) -> list[Step]:
    steps = {node: Step(node, rules.get(node)) for node in graph.nodes}
    last_use = _last_uses(graph)
    for node, step in steps.items():
        step.args = fx.node.map_arg(node.args, steps.__getitem__)
        step.kwargs = fx.node.map_arg(node.kwargs, steps.__getitem__)
        step.frees = tuple(steps[value] for value in last_use.get(node, ()))
    return list(steps.values())


def _values(args: Any, env: dict[Step, Any]) -> Any:
    """``args`` (a step's args or kwargs) with every step replaced by its value in ``env``."""
    if isinstance(args, Step):
        return env[args]
    if isinstance(args, tuple):
        return tuple(_values(a, env) for a in args)
    if isinstance(args, list):
        return [_values(a, env) for a in args]
    if isinstance(args, dict):
        return {k: _values(v, env) for k, v in args.items()}
    return args


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


def graph_problem(graph: fx.Graph, modules: Modules) -> str:
    """Why the graph cannot run in the wide layouts ("" when it can).

    Tracks each value's layout (:mod:`colearning.grouped.layouts`) through the nodes'
    rules: the member's input is ``inputs``, its output must be ``features``.
    """
    layouts: dict[fx.Node, str] = {}
    weighted = False
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        return f"the member takes {len(placeholders)} inputs, not one"
    for node in graph.nodes:
        if node.op == "placeholder":
            layouts[node] = INPUTS
            continue
        if node.op == "output":
            value = node.args[0]
            if not isinstance(value, fx.Node) or layouts.get(value) != FEATURES:
                return ("the member's output is not one [B, C] tensor computed by its layers "
                        "(a feature map needs a flatten or pooling to [B, C])")
            break
        if node.op == "get_attr":
            return (f"the member reads {node.target} directly in forward (parameters and "
                    "buffers must belong to supported layers)")
        rule = rule_for(node, modules)
        problem, layout = rule.check(
            node, modules, [layouts[arg] for arg in _flat_args(node) if arg in layouts])
        if problem:
            return problem
        weighted |= rule.weighted
        layouts[node] = layout
    if not weighted:
        return "the member has no parameterized layer"
    return ""


def _flat_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)
    return found


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


def _is_relu(node: fx.Node, modules: Modules) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) is nn.ReLU
    return node.op == "call_function" and node.target in (F.relu, torch.relu)


def _pool_before_relu(graph: fx.Graph, modules: Modules) -> fx.Graph:
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
