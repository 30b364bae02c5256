"""Which runs may train together as one pack, and how to split many into packs.

The cells of a pack are distinct experiments: each has its own seed (so its own data
split, batch order, augmentation stream and member initializations), its own ensemble
size, objective and coupling (``loss.objective``, ``loss.joint_weight``, ``loss.beta`` /
``loss.beta_bar`` / ``loss.kl_reduction``), and its own
learning rate and weight decay. Everything else is shared, because the members of all
cells take each step together in one engine: architecture and model options, dataset
and path, split kind and sizes, batch size, epochs, schedule kind and warm-up, optimizer
(``optim.name``) and its options, augmentation, peers mode, divergence handling, strategy,
device and precision. A grown run (``expand.source``) and a distilled one
(``distill.teacher``: its soft targets live in the pool) train alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from colearning.config import DISPLAY_KEYS, Config, config_diff, keys_tagged, without_keys
from colearning.errors import ConfigError
from colearning.training.growth import check_grown

# Config keys in which the cells of one pack may differ.
CELL_KEYS = keys_tagged("cell")  # what may differ between the cells of a pack


def pack_key(config: Config) -> str:
    """A text equal for two configs exactly when they may share a pack."""
    values = without_keys(config.to_dict(), CELL_KEYS + DISPLAY_KEYS)
    return json.dumps(values, sort_keys=True, default=str)


def check_packable(configs: Sequence[Config]) -> None:
    """ConfigError naming the first key in which ``configs`` may not differ, if any."""
    if len(configs) > 1:
        check_grown(list(configs))  # a grown run trains alone
        if any(config.distill.teacher is not None for config in configs):
            raise ConfigError("a distilled run (distill.teacher) trains alone, not in a pack")
    first = without_keys(configs[0].to_dict(), CELL_KEYS + DISPLAY_KEYS)
    for config in configs[1:]:
        differ = config_diff(first, without_keys(config.to_dict(), CELL_KEYS + DISPLAY_KEYS))
        if differ:
            raise ConfigError(f"runs that differ in {differ[0]} cannot train in one pack (only "
                              f"{', '.join(CELL_KEYS)} may differ)")


def plan_packs(configs: Sequence[Config], max_cells: int | None = None,
               max_members: int | None = None) -> list[list[int]]:
    """Positions of ``configs`` grouped into packs: only packable configs together, each
    pack at most ``max_cells`` cells and ``max_members`` members (None: no limit).

    Each group of packable configs is cut into as few packs as the limits allow, of about
    equal numbers of members (so parallel workers finish together), keeping the given order
    (a sweep's seed-major order: whole curves first).
    """
    groups: dict[str, list[int]] = {}
    for position, config in enumerate(configs):
        alone = config.expand.source is not None or config.distill.teacher is not None
        key = f"alone:{position}" if alone else pack_key(config)
        groups.setdefault(key, []).append(position)
    cells_limit = max_cells or math.inf
    members_limit = max_members or math.inf
    packs: list[list[int]] = []
    for positions in groups.values():
        sizes = [configs[p].ensemble.n_members for p in positions]
        count = max(1, math.ceil(sum(sizes) / members_limit), math.ceil(len(sizes) / cells_limit))
        target = sum(sizes) / count
        current: list[int] = []
        members = 0
        for position, size in zip(positions, sizes, strict=True):
            if current and (len(current) >= cells_limit or members + size > members_limit
                            or members >= target):
                packs.append(current)
                current, members = [], 0
            current.append(position)
            members += size
        packs.append(current)
    return sorted(packs, key=lambda pack: pack[0])
