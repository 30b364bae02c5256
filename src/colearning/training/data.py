"""A run's data on the training device: one pool of images, one set of indices per cell.

The pool is the dataset's official train side followed by its test side (and its own
validation side, when the data brings one), as uint8 on the device (a quarter of float32);
each cell of a pack (a plain run is a pack of one) holds the pooled indices of its own
train / test / validation split, drawn from its own seed. Batches are gathered from the
pool and converted to float per step, so K cells on one dataset cost one copy of it, not K.

Data given in memory (``colearning.train(config, data=...)``) becomes the same RawDataset:
the run's config says data.name "arrays" with no data.path, and RUN_DIR/data.json holds the
data's sha256, which a resume checks the data it is given against.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import rundir
from colearning.config import Config, DataConfig
from colearning.data import (
    RawDataset,
    SplitIndices,
    as_raw,
    channel_stats,
    held_out,
    load_dataset,
    select_classes,
    split_indices,
    take,
)
from colearning.data.arrays import fingerprint
from colearning.environment import env_number
from colearning.errors import ConfigError, RunDirError


@dataclass
class Pool:
    """Every image of a dataset on the device: uint8 [n, C, H, W], labels int64 [n]; for a
    distilled run (which trains alone) its teacher's soft targets float32 [n, C]
    (:mod:`colearning.training.teacher`), gathered beside the labels."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    soft: torch.Tensor | None = None


@dataclass
class CellData:
    """One cell's split as pooled indices on the device (val None without data.val_size or
    the data's own validation side), and its per-channel normalization (None unless
    data.normalize)."""

    train: torch.Tensor
    test: torch.Tensor
    val: torch.Tensor | None
    test_indices: np.ndarray  # the same as ``test``, on the host, for predictions.npz
    mean: torch.Tensor | None = None  # [C]
    std: torch.Tensor | None = None  # [C]


def source_raw(config: Config) -> RawDataset:
    """The dataset config.data names, all of its classes."""
    # A testing hook only (like rundir's COLEARNING_KILL_DURING_WRITE): a data load slow
    # enough for the tests to interrupt it.
    time.sleep(env_number("COLEARNING_SLEEP_BEFORE_DATA", 0))
    data = config.data
    return load_dataset(data.name, data.path, cache_dir=data.cache_dir,
                        progress=config.train.progress)


def load_raw(config: Config, given: RawDataset | None = None) -> RawDataset:
    """The run's dataset: ``given`` (data given in memory) or the one config.data names,
    restricted to data.classes (the one place a run's data takes its classes; the rest of
    the test side stays reachable through :func:`held_out_test`)."""
    return select_classes(source_raw(config) if given is None else given, config.data.classes)


def held_out_test(config: Config, source: RawDataset | None = None) -> np.ndarray:
    """The test images uint8 [n, C, H, W] of the classes data.classes leaves out (the OOD
    set ``held-out``; empty without data.classes), from ``source`` (the data in all its
    classes; None: read the dataset config.data names)."""
    return held_out(source_raw(config) if source is None else source, config.data.classes)


def split_of(config: Config, raw: RawDataset) -> SplitIndices:
    """The pooled indices of the run's split of ``raw`` (its seed, sizes, validation)."""
    data = config.data
    return split_indices(len(raw.train_y), len(raw.test_y), data.split,
                         train_size=data.train_size, test_size=data.test_size,
                         val_size=data.val_size, seed=config.seed, n_val=raw.n_val)


def given_data(config: Config, data: Any) -> tuple[Config, RawDataset]:
    """``colearning.train``'s ``data=`` as a RawDataset, and ``config`` saying the data came
    from memory (data.name "arrays", no data.path)."""
    if config.data.path is not None or config.data.name not in (DataConfig.name, "arrays"):
        raise ConfigError(f"data= gives the data, but the config names data.name="
                          f"{config.data.name} data.path={config.data.path}; drop them")
    raw = as_raw(data)
    config = copy.deepcopy(config)
    config.data.name = "arrays"
    return config, raw


def from_memory(config: Config) -> bool:
    """Whether a run's config says its data was given in memory (see :func:`given_data`)."""
    return config.data.name == "arrays" and config.data.path is None


def record_data(path: Path, raw: RawDataset) -> None:
    """RUN_DIR/data.json of a run on in-memory data: its sha256 and sizes."""
    rundir.atomic_write_json(path / rundir.DATA, {
        "source": "memory", "sha256": fingerprint(raw), "classes": raw.num_classes,
        "image": [raw.in_channels, raw.image_size, raw.image_size],
        "images": {side: len(y) for side, _, y in raw.sides()}})


def resumed_data(path: Path, config: Config, raw: RawDataset | None,
                 needed: bool = True) -> None:
    """Refuse (one line) to resume the run in ``path`` with ``raw`` (``resume``'s ``data=``
    converted; None: not given) unless the run was trained on in-memory data with exactly
    that data; ``needed``: whether the run still trains (a finished one needs no data)."""
    if not from_memory(config):
        if raw is not None:
            raise ConfigError(f"{path} reads its data from data.name={config.data.name}; "
                              "resume it without data=")
        return
    if raw is None:
        if needed:
            raise ConfigError(f"{path} was trained on data given in memory; pass the same "
                              "data: colearning.resume(run_dir, data=...)")
        return
    try:
        recorded = json.loads((path / rundir.DATA).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        raise RunDirError(f"{path / rundir.DATA} is missing or corrupt: the data this run "
                          "was trained on cannot be checked; start a new run") from None
    if fingerprint(raw) != recorded:
        raise RunDirError(f"data= is not the data {path} was trained on (its sha256 is in "
                          f"{rundir.DATA}); pass the same images, labels and classes")


def make_pool(raw: RawDataset, device: torch.device) -> Pool:
    # Move the uint8 bytes, a quarter of the float32 size; batches convert on the device.
    images = np.concatenate([x for _, x, _ in raw.sides()])
    labels = np.concatenate([y for _, _, y in raw.sides()]).astype(np.int64)
    return Pool(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device),
                raw.num_classes, raw.in_channels, raw.image_size)


def cell_data(config: Config, raw: RawDataset, device: torch.device) -> CellData:
    """The split of ``config`` (its seed, sizes, validation) as pooled indices on ``device``."""
    data = config.data
    indices = split_of(config, raw)
    if config.train.batch_size > len(indices.train):
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is larger than the training set "
            f"({len(indices.train)} images); lower it"
        )
    mean = std = None
    if data.normalize:
        stats = channel_stats(_chunks(raw, indices.train))
        mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in stats)
    return CellData(
        train=torch.from_numpy(indices.train).to(device),
        test=torch.from_numpy(indices.test).to(device),
        val=None if indices.val is None else torch.from_numpy(indices.val).to(device),
        test_indices=indices.test,
        mean=mean,
        std=std,
    )


def _chunks(raw: RawDataset, indices: np.ndarray, size: int = 8192) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield take(raw, indices[start:start + size])[0]


def gather(pool: Pool, index: torch.Tensor, cells: list[CellData]) -> torch.Tensor:
    """Float images [K, B, C, H, W] in [0, 1] (then per-cell normalized) of pooled ``index``
    [K, B], row k from cell ``cells[k]``."""
    images = pool.images[index].float().div_(255)
    if cells[0].mean is not None:
        shape = (len(cells), 1, -1, 1, 1)
        mean = torch.stack([c.mean for c in cells]).view(shape)
        std = torch.stack([c.std for c in cells]).view(shape)
        images.sub_(mean).div_(std)
    return images
