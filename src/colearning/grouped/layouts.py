"""The wide layouts: one activation of n members, held side by side.

- ``inputs``: before the first weight layer, the batches [K', B, ...] the members read
  (member m reads batch m // r, see :func:`input_blocks`); one batch for a plain ensemble.
- ``channels``: a feature map [B, n*C, H, W], channels member-major.
- ``points``: a ``channels`` map [B, n*C, 1, 1] held as [n, B, C] (what a convolution whose
  kernel covers its whole input gives). The construction check counts it as ``channels``:
  which of the two a value is depends on the input's shape, known only at run time.
- ``features``: [n, B, F].

The check also tracks two values that are no activation: ``batch``, the batch size
(``x.size(0)``, ``x.shape[0]``), and ``shape``, an ``x.shape`` read only as ``shape[0]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

INPUTS = "inputs"
CHANNELS = "channels"
POINTS = "points"
FEATURES = "features"
BATCH = "batch"
SHAPE = "shape"


class Wide(NamedTuple):
    """An activation of all members: ``tensor`` in ``layout``; ``r`` members per batch
    (``inputs`` layout only)."""

    tensor: torch.Tensor
    layout: str
    r: int = 1


class BatchShape(tuple):
    """``x.shape`` as the grouped strategy knows it: the batch size only."""

    def __new__(cls, batch: int) -> BatchShape:
        return super().__new__(cls, (batch,))


def batch_size(value: Wide) -> int:
    return value.tensor.shape[0] if value.layout == CHANNELS else value.tensor.shape[1]


def as_members(value: Wide) -> Wide:
    """An ``inputs`` value as every member's copy (channels or features layout)."""
    if value.layout != INPUTS:
        return value
    t = value.tensor.repeat_interleave(value.r, dim=0) if value.r > 1 else value.tensor
    if t.dim() == 5:  # [n, B, C, H, W] -> [B, n*C, H, W]
        return Wide(t.transpose(0, 1).flatten(1, 2), CHANNELS)
    return Wide(t, FEATURES)


def as_map(value: Wide) -> Wide:
    """A ``points`` value ([n, B, C]) as the [B, n*C, 1, 1] map it stands for."""
    if value.layout != POINTS:
        return value
    t = value.tensor
    return Wide(t.transpose(0, 1).reshape(t.shape[1], -1, 1, 1), CHANNELS)


def elementwise(value: Wide, fn: Callable[[torch.Tensor], torch.Tensor]) -> Wide:
    """``fn`` (the same on every value, or every channel of a map) on any layout."""
    if value.layout == INPUTS:  # [K', B, ...] as one batch of K' * B
        t = value.tensor
        return Wide(fn(t.flatten(0, 1)).unflatten(0, t.shape[:2]), INPUTS, value.r)
    return Wide(fn(value.tensor), value.layout, value.r)


def flattened(layout: str) -> str:
    """The layout of a flatten (dims 1..-1) of a value in ``layout``."""
    return FEATURES if layout == CHANNELS else layout


def flatten(value: Wide, n: int) -> Wide:
    """Flatten dims 1..-1 of every member's value (a map in its per-member order)."""
    if value.layout in (CHANNELS, POINTS):
        return Wide(to_features(value.tensor, n, value.layout), FEATURES)
    if value.layout == INPUTS:
        return Wide(value.tensor.flatten(2), INPUTS, value.r)
    return value


def to_features(x: torch.Tensor, n: int, layout: str) -> torch.Tensor:
    """[B, N*C, H, W] -> [N, B, C*H*W] (per-member flatten order); features pass through."""
    if layout in (FEATURES, POINTS):
        return x
    batch = x.shape[0]
    return x.reshape(batch, n, -1).transpose(0, 1)


def input_blocks(x: torch.Tensor, member_inputs: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """The batches members read, as ([K', B, ...], r): member m reads batch m // r.

    All members on one batch (a plain ensemble): K' = 1, r = n. Runs of r members on one
    batch each (a pack of equal-sized cells): one batch per run. Anything else: one batch
    per member (r = 1).
    """
    n = len(member_inputs)
    runs = [member_inputs[m] for m in range(n)
            if m == 0 or member_inputs[m] != member_inputs[m - 1]]
    r = n // len(runs)
    if r * len(runs) == n and all(member_inputs[m] == runs[m // r] for m in range(n)):
        selected = runs
    else:
        selected, r = list(member_inputs), 1
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
