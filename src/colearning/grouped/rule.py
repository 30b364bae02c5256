"""What a rule of the grouped strategy is: one kind of graph node, stated once.

A :class:`Rule` says which nodes it covers (``matches``), which layouts of its inputs it
accepts and which layout it gives (``check``: when the ensemble is built, a reason when the
node cannot run grouped), and how it runs on the wide layouts (``run``: every forward pass).
The rules themselves are in :mod:`colearning.grouped.layers` (submodule calls) and
:mod:`colearning.grouped.ops` (functions and methods, and the list of all rules in order).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from colearning.grouped.layouts import INPUTS, Wide

Modules = dict[str, nn.Module]
Check = tuple[str, str]  # (problem, output layout); problem "" when the node can run


class Pass:
    """One forward pass of n members: what the rules' ``run`` read besides their inputs."""

    def __init__(self, modules: Modules, params: dict[str, torch.Tensor],
                 buffers: dict[str, torch.Tensor], n: int, training: bool) -> None:
        self.modules, self.params, self.buffers = modules, params, buffers
        self.n, self.training = n, training


class Rule:
    """A kind of call node (placeholders, get_attr and the output are the program's).

    A rule that only refuses (its ``check`` always gives a problem) has no ``run``.
    """

    weighted = False  # a layer with member weights: a member needs at least one

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        raise NotImplementedError

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        """(problem, output layout), given the layouts of the node's inputs in order."""
        raise NotImplementedError

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError(f"{type(self).__name__} refuses {node.name}: an unchecked "
                                  "graph")


class LayerRule(Rule):
    """A call of a submodule of one of ``types``, on one input."""

    types: tuple[type[nn.Module], ...] = ()

    def matches(self, node: fx.Node, modules: Modules) -> bool:
        return node.op == "call_module" and isinstance(modules[node.target], self.types)

    def check(self, node: fx.Node, modules: Modules, layouts: list[str]) -> Check:
        return self.check_layer(node.target, modules[node.target], first_layout(layouts))

    def run(self, p: Pass, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        return self.run_layer(p, node.target, p.modules[node.target], args[0])

    def check_layer(self, where: str, layer: Any, layout: str) -> Check:
        """(problem, output layout) of ``layer`` (named ``where``) on an input in ``layout``."""
        raise NotImplementedError

    def run_layer(self, p: Pass, name: str, layer: Any, value: Wide) -> Wide:
        raise NotImplementedError(f"{type(self).__name__} refuses {name}: an unchecked graph")


def first_layout(layouts: list[str]) -> str:
    """The layout of a node's first input (the member's input when it reads none)."""
    return layouts[0] if layouts else INPUTS


def target_name(target: Any) -> str:
    return getattr(target, "__name__", None) or str(target)
