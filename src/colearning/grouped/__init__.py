"""The grouped strategy: N members of one architecture run as one wide network.

A member is traced once with torch.fx (:class:`WideProgram`); its graph then runs with
every member's stacked parameters at once, each activation held in a *wide layout* that
holds all members side by side (:mod:`colearning.grouped.layouts`):

- ``inputs``: before the first weight layer, the batches [K', B, ...] the members read
  (member m reads batch m // r); one batch for a plain ensemble.
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

Each kind of node has one rule (:mod:`colearning.grouped.rule`): the layouts it accepts
and gives, checked when the ensemble is built, and how it runs on the wide layouts. The
rules are in :mod:`colearning.grouped.layers` (submodules) and :mod:`colearning.grouped.ops`
(functions and methods; ``RULES``, all of them in the order tried); the program
(:mod:`colearning.grouped.program`) traces, checks and runs the graph with them.

The graph is traced once, in whatever mode the member was in: a forward that branches on
``self.training`` (or calls F.dropout with ``training=self.training``) would bake that
branch in, so dropout must be a module (nn.Dropout), which follows train/eval mode here.
"""

from colearning.grouped.chunks import SplitMembers, chunk_sizes
from colearning.grouped.layers import CHANNEL_MODULES, ELEMENTWISE_MODULES, LAYERS
from colearning.grouped.layouts import Wide, device_index
from colearning.grouped.ops import (
    BINARY_FUNCTIONS,
    BINARY_METHODS,
    CHANNEL_FUNCTIONS,
    CONCAT_FUNCTIONS,
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    RULES,
    rule_for,
)
from colearning.grouped.program import WideProgram, wide_program
from colearning.grouped.rule import Rule

__all__ = [
    "BINARY_FUNCTIONS",
    "BINARY_METHODS",
    "CHANNEL_FUNCTIONS",
    "CHANNEL_MODULES",
    "CONCAT_FUNCTIONS",
    "ELEMENTWISE_FUNCTIONS",
    "ELEMENTWISE_METHODS",
    "ELEMENTWISE_MODULES",
    "LAYERS",
    "RULES",
    "Rule",
    "SplitMembers",
    "Wide",
    "WideProgram",
    "chunk_sizes",
    "device_index",
    "rule_for",
    "wide_program",
]
