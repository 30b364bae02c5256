"""The data ``colearn evaluate --data`` names: a YAML file (a config, or its ``data:``
section) or an .npz file of arrays, read into a :class:`RawDataset` with a short tag that
names its folder under RUN_DIR/evaluation/."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colearning.config import config_from_dict
from colearning.data import RawDataset, load_dataset
from colearning.errors import ConfigError
from colearning.yamlfiles import read_yaml, resolve_paths

# a dataset's official test side, train side, its own validation side (user arrays' x_val;
# built-in datasets have none), or all of them
SPLITS = ("test", "train", "val", "all")
ARRAYS = "arrays"  # the dataset that reads an .npz (colearning.data.arrays.read_npz)
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class Source:
    """A dataset read for evaluation: the arrays, what names it (dataset and path, as
    metrics.json records them) and its default tag."""

    raw: RawDataset
    name: str
    path: str | None
    tag: str


def read_source(data: str | Path, *, progress: bool = False) -> Source:
    """The dataset that ``data`` (a .yaml/.yml or .npz path) names."""
    path = Path(data).expanduser()
    if path.suffix.lower() in YAML_SUFFIXES:
        return _from_yaml(path, progress)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise ConfigError(f"data file {path} does not exist")
        raw = load_dataset(ARRAYS, str(path.absolute()), progress=progress)
        return Source(raw, ARRAYS, str(path.absolute()), tag(path.stem))
    raise ConfigError(f"--data takes a YAML file (a config, or its data: section) or an .npz "
                      f"file (x_train, y_train, x_test, y_test), got {data}")


def _from_yaml(path: Path, progress: bool) -> Source:
    values = read_yaml(path)
    whole = "name" not in values  # a config (or part of one), else a bare data section
    section = (values.get("data") or {}) if whole else values
    # Checked as a config's data section (unknown keys are errors; the config's plugins may
    # register its dataset); relative paths are relative to the file, as in a config.
    plugins = values.get("plugins", []) if whole else []
    config = config_from_dict(resolve_paths({"data": section, "plugins": plugins}, path.parent))
    if "name" not in section:  # the default dataset would be a guess: it must be said
        raise ConfigError(f"{path} names no dataset: give a config with data.name, or a "
                          "data section (name: digits)")
    data = config.data
    raw = load_dataset(data.name, data.path, cache_dir=data.cache_dir, progress=progress)
    where = f"-{Path(data.path).stem}" if data.path else ""
    return Source(raw, data.name, data.path, tag(f"{data.name}{where}"))


def tag(text: str) -> str:
    """``text`` as a folder name: runs of characters other than letters, digits, '.', '_'
    and '-' become one '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "data"


def check_tag(name: str) -> str:
    """A tag given by the user (--name), refused unless it is one plain folder name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ConfigError(f"--name {name!r} must be one folder name of letters, digits, '.', "
                          "'_' and '-' (starting with a letter or digit)")
    return name


def side(raw: RawDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [n, C, H, W] and labels int64 [n] of ``split`` (:data:`SPLITS`; ``all``:
    every side the data has, in pooled order)."""
    sides = {name: (x, y) for name, x, y in raw.sides()}
    if split == "all":
        return (np.concatenate([x for x, _ in sides.values()]),
                np.concatenate([y for _, y in sides.values()]))
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if split not in sides:
        raise ConfigError(f"the data has no {split} side (only {', '.join(sides)}); pick "
                          "another --split")
    return sides[split]
