"""A sweep declared as data: a base run config and a grid of values -> named cells.

A sweep file (YAML)::

    name: fig2c_cpu_jpeg
    base_config: ../paper/lenet5_cifar10.yaml   # relative to this file; or `base:` a mapping
    overrides:                                  # merged into the base (mapping or key=value list)
      train: {epochs: 30}
    grid:                                       # dotted config key -> list of values
      loss.kl_reduction: [batchmean, mean]
      loss.beta: [-0.4, -0.2, 0.0, 0.2]
    seeds: 3                                    # the same as grid `seed: [0, 1, 2]`

    spec = load_spec("configs/sweeps/fig2c_cpu_jpeg.yaml")
    [cell.name for cell in spec.cells()][:2]    # ['klbatchmean_beta-0.4_seed0', ...]

Grid keys may use the short names ``beta``, ``beta_bar``, ``N``, ``kl_reduction``,
``objective``, ``joint_weight`` and ``seed``. Every cell's config is validated like a run's
(unknown keys, wrong types and bad values are :class:`ConfigError`). Cells are ordered
seed-major (all cells of seed 0 first, so a sweep stopped early already has whole curves)
and named from their grid values with the seed last, e.g. ``N2_beta-0.4_seed0``.

A sweep holds at most :data:`MAX_CELLS` cells, counted (the product of the grid's lengths
and the seeds) before any is built. Command-line overrides may not set a grid key (nor the
other of loss.beta / loss.beta_bar when one of them is a grid key): grids live in the sweep
file.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colearning.config import (
    config_from_dict,
    merge,
    merge_coupling,
    parse_overrides,
    read_yaml,
    resolve_paths,
)
from colearning.errors import ConfigError
from colearning.names import check_names

SPEC_KEYS = ("name", "base", "base_config", "overrides", "grid", "seeds")
# The most cells one sweep may hold. Cells are planned up front (named, their configs
# validated and kept), so a grid beyond this (4 keys of 100 values: 10^8 cells) would fill
# the memory for minutes before the first cell ran; counted before any cell is built.
MAX_CELLS = 100_000
ALIASES = {
    "beta": "loss.beta",
    "beta_bar": "loss.beta_bar",
    "N": "ensemble.n_members",
    "n_members": "ensemble.n_members",
    "kl_reduction": "loss.kl_reduction",
    "objective": "loss.objective",
    "joint_weight": "loss.joint_weight",
    "seeds": "seed",
}
# Short labels of grid keys in cell names; other keys use their last dotted part.
LABELS = {
    "ensemble.n_members": "N",
    "loss.beta": "beta",
    "loss.beta_bar": "betabar",
    "loss.kl_reduction": "kl",
    "loss.objective": "",
    "loss.joint_weight": "lambda",
    "seed": "seed",
}


@dataclass(frozen=True)
class SweepCell:
    """One grid point: its directory name, grid values (dotted keys) and full run config."""

    name: str
    values: dict[str, Any]
    config: dict[str, Any]


@dataclass
class SweepSpec:
    """A resolved sweep: ``base`` is a full run config dict, ``grid`` maps dotted keys to
    value lists (``seed`` included)."""

    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "grid": self.grid}

    def n_cells(self) -> int:
        """How many cells the grid holds (the product of its lengths), without building them."""
        return math.prod(len(values) for values in self.grid.values())

    def cells(self) -> list[SweepCell]:
        """Every grid point, seed-major, with a validated run config and a unique name."""
        check_size({key: len(values) for key, values in self.grid.items()})
        keys = sorted(self.grid, key=lambda k: k != "seed")  # seed outermost
        cells, names = [], {}
        # The seed is an int that no other key depends on: validate each other combination
        # once and stamp the seeds in (validation is the slow part of a large grid).
        validated: dict[str, dict[str, Any]] = {}
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            name = cell_name(values, order=list(self.grid))
            if name in names:
                raise ConfigError(
                    f"grid values {names[name]} and {values} give the same cell name {name!r}; "
                    "make the values distinct"
                )
            names[name] = values
            others = {k: v for k, v in values.items() if k != "seed"}
            key = cell_name(others, order=list(self.grid))
            if key not in validated:
                validated[key] = cell_config(self.base, others)
            config = copy.deepcopy(validated[key])
            if "seed" in values:
                config["seed"] = values["seed"]
            cells.append(SweepCell(name, values, config))
        return cells


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    parts = dotted.split(".")
    out = node
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def cell_config(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The validated run config dict of one cell: ``base`` updated by the grid ``values``.

    A grid over loss.beta clears the base's loss.beta_bar and vice versa (a run takes one
    of the two), and progress bars are off (one bar over cells is shown instead).
    """
    config = merge(base, {"train": {"progress": False}})
    for key, value in values.items():
        config = merge_coupling(config, _nested(key, value))
    try:
        resolved = config_from_dict(config)
        check_names(resolved)
        return resolved.to_dict()
    except ConfigError as error:
        raise ConfigError(f"sweep cell {values}: {error}") from None


def format_value(value: Any) -> str:
    """A filesystem-safe, stable text for a grid value (-0.4 -> '-0.4', 1.0 -> '1')."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "none"
    if isinstance(value, str):
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", value).strip("-") or "empty"
    digest = hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]
    return f"h{digest}"


def cell_name(values: dict[str, Any], order: list[str] | None = None) -> str:
    """``{'ensemble.n_members': 2, 'loss.beta': -0.4, 'seed': 0}`` -> ``N2_beta-0.4_seed0``."""
    keys = [k for k in (order or list(values)) if k in values and k != "seed"]
    keys += ["seed"] if "seed" in values else []
    return "_".join(f"{LABELS.get(k, k.split('.')[-1])}{format_value(values[k])}" for k in keys)


def _canonical_key(key: str) -> str:
    return ALIASES.get(key, key)


def _check_key(key: str, base: dict[str, Any]) -> None:
    """A grid key must name a config leaf (validated with the project's config machinery)."""
    try:
        config_from_dict(merge(base, _nested(key, _leaf(base, key))))
    except ConfigError as error:
        raise ConfigError(f"grid key {key!r}: {error}") from None


def _leaf(base: dict[str, Any], dotted: str) -> Any:
    node: Any = config_from_dict(base).to_dict()
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            # unknown key: give it a dummy so config_from_dict names the valid keys
            return 0
        node = node[part]
    return node


def check_size(lengths: dict[str, int]) -> int:
    """The number of cells of a grid with these lengths (per dotted key, ``seed`` included);
    ConfigError when it exceeds :data:`MAX_CELLS`."""
    count = math.prod(lengths.values())
    if count > MAX_CELLS:
        parts = " x ".join(f"{n:,} {'seeds' if key == 'seed' else key}"
                           for key, n in lengths.items() if n != 1)
        raise ConfigError(f"the sweep has {count:,} cells ({parts}), more than the "
                          f"{MAX_CELLS:,} one sweep may hold; use fewer grid values or seeds, "
                          "or split it into several sweeps")
    return count


def _seed_count(value: Any) -> int:
    """How many seeds ``value`` (a count or a list) names, without building the list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 1)  # < 1 is refused by _seed_list
    return len(value) if isinstance(value, list) else 1


PARTNERS = {"loss.beta": "loss.beta_bar", "loss.beta_bar": "loss.beta"}


def _dotted(nested: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of the leaves of a nested dict."""
    out = []
    for key, value in nested.items():
        if isinstance(value, dict) and value:
            out += _dotted(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _shown(key: str, values: Any) -> str:
    """``key: [v1, v2, ...]`` (the first few values), or ``seeds: K`` for a seed count."""
    if isinstance(values, int) and not isinstance(values, bool):
        return f"seeds: {values}"
    values = list(values) if isinstance(values, list) else [values]
    return (f"{key}: [" + ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
            + "]")


def check_overrides(overrides: list[str], grid: dict[str, Any]) -> None:
    """Refuse a command-line override that sets a grid key (dotted ``grid`` keys, ``seed``
    included, -> the sweep's values for them), or the other of loss.beta / loss.beta_bar
    when one of them is a grid key: the grid's values would silently win (or clash)."""
    for item in overrides:
        for key in _dotted(parse_overrides([item])):
            for grid_key, values in grid.items():
                related = [grid_key] + ([PARTNERS[grid_key]] if grid_key in PARTNERS else [])
                hit = next((g for g in related if key == g or key.startswith(g + ".")
                            or g.startswith(key + ".")), None)
                if hit is None:
                    continue
                what = (f"sets {key}, a grid key of the sweep" if hit == grid_key else
                        f"sets {key}, which every cell replaces by the sweep's grid key "
                        f"{grid_key}")
                where = "its grid or seeds (or give --seeds K)" if grid_key == "seed" else \
                    "its grid"
                raise ConfigError(f"{item} {what} ({_shown(grid_key, values)}); grids live "
                                  f"in the sweep file: change {where} there, or drop {item}")


def _seed_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"seeds must be >= 1 or a list of seeds, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        return list(value)
    raise ConfigError(f"seeds must be a count (e.g. 30) or a list of ints, got {value!r}")


def spec_from_dict(values: dict[str, Any], *, base_dir: str | Path = ".",
                   overrides: list[str] | None = None,
                   seeds: int | list[int] | None = None) -> SweepSpec:
    """A resolved, validated :class:`SweepSpec` from a sweep mapping.

    ``base_dir`` (the sweep file's folder) resolves ``base_config``; ``overrides``
    (``key=value``) are merged into the base after the file's own; ``seeds`` replaces the
    file's seeds. Relative data paths are relative to the file that names them (the base
    config file, or the sweep file for ``base:`` and ``overrides:``; command-line overrides:
    the current directory) and stored absolute, so the cells do not depend on where a later
    resume runs from.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"a sweep file must hold a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"unknown sweep key {unknown[0]!r}; valid: {', '.join(SPEC_KEYS)}")
    if "base" in values and "base_config" in values:
        raise ConfigError("give the sweep's base run config as `base:` or `base_config:`, "
                          "not both")
    raw_grid = values.get("grid") or {}
    if not isinstance(raw_grid, dict):
        raise ConfigError("sweep `grid` must map config keys to lists of values")
    if seeds is None and "seeds" in values:
        seeds = values["seeds"]
    # before anything is merged or built: a grid key set on the command line, the size
    grid_values = {_canonical_key(str(key)): options for key, options in raw_grid.items()}
    if seeds is not None:
        grid_values["seed"] = seeds
    check_overrides(overrides or [], grid_values)
    check_size({key: _seed_count(options) if key == "seed" else
                len(options) if isinstance(options, list) else 1
                for key, options in grid_values.items()})
    base = resolve_paths(dict(values.get("base") or {}), base_dir)
    if "base_config" in values:
        config_file = Path(base_dir) / values["base_config"]
        base = resolve_paths(read_yaml(config_file), config_file.parent)
    file_overrides = values.get("overrides") or {}
    if isinstance(file_overrides, list):
        file_overrides = parse_overrides([str(v) for v in file_overrides])
    if not isinstance(file_overrides, dict):
        raise ConfigError("sweep `overrides` must be a mapping or a list of key=value")
    base = merge(base, resolve_paths(file_overrides, base_dir))
    base = merge(base, resolve_paths(parse_overrides(overrides or []), "."))
    resolved = config_from_dict(base)
    check_names(resolved)
    base = resolved.to_dict()

    grid: dict[str, list[Any]] = {}
    for key, options in raw_grid.items():
        dotted = _canonical_key(str(key))
        if dotted in grid:
            raise ConfigError(f"grid key {key!r} is given twice (as {dotted})")
        if not isinstance(options, list) or not options:
            raise ConfigError(f"grid key {key!r} must list one or more values, got {options!r}")
        if len(set(map(format_value, options))) != len(options):
            raise ConfigError(f"grid key {key!r} repeats a value: {options}")
        if dotted == "seed":
            options = _seed_list(options)
        else:
            _check_key(dotted, base)
        grid[dotted] = list(options)
    if "loss.beta" in grid and "loss.beta_bar" in grid:
        raise ConfigError("grid over loss.beta or loss.beta_bar, not both")
    if seeds is not None:
        grid["seed"] = _seed_list(seeds)
    name = str(values.get("name") or "sweep")
    spec = SweepSpec(name=name, base=base, grid=grid)
    spec.cells()  # validate every cell config and name now, not mid-sweep
    return spec


def load_spec(path: str | Path, overrides: list[str] | None = None,
              seeds: int | list[int] | None = None) -> SweepSpec:
    """The sweep file at ``path`` resolved (see :func:`spec_from_dict`)."""
    path = Path(path)
    values = read_yaml(path)
    values.setdefault("name", path.stem)
    return spec_from_dict(values, base_dir=path.parent, overrides=overrides, seeds=seeds)


def dump_spec(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
