"""A run's data on the training device: one pool of images, one set of indices per cell.

The pool is the dataset's official train side followed by its test side, as uint8 on the
device (a quarter of float32); each cell of a pack (a plain run is a pack of one) holds the
pooled indices of its own train / test / validation split, drawn from its own seed. Batches
are gathered from the pool and converted to float per step, so K cells on one dataset cost
one copy of it, not K.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from colearning.config import Config
from colearning.data import RawDataset, channel_stats, load_dataset, split_indices, take
from colearning.environment import env_number
from colearning.errors import ConfigError


@dataclass
class Pool:
    """Every image of a dataset on the device: uint8 [n, C, H, W], labels int64 [n]."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int


@dataclass
class CellData:
    """One cell's split as pooled indices on the device (val None without data.val_size),
    and its per-channel normalization (None unless data.normalize)."""

    train: torch.Tensor
    test: torch.Tensor
    val: torch.Tensor | None
    test_indices: np.ndarray  # the same as ``test``, on the host, for predictions.npz
    mean: torch.Tensor | None = None  # [C]
    std: torch.Tensor | None = None  # [C]


def load_raw(config: Config) -> RawDataset:
    # A testing hook only (like rundir's COLEARNING_KILL_DURING_WRITE): a data load slow
    # enough for the tests to interrupt it.
    time.sleep(env_number("COLEARNING_SLEEP_BEFORE_DATA", 0))
    data = config.data
    return load_dataset(data.name, data.path, cache_dir=data.cache_dir,
                        progress=config.train.progress)


def make_pool(raw: RawDataset, device: torch.device) -> Pool:
    # Move the uint8 bytes, a quarter of the float32 size; batches convert on the device.
    images = np.concatenate([raw.train_x, raw.test_x])
    labels = np.concatenate([raw.train_y, raw.test_y]).astype(np.int64)
    return Pool(torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device),
                raw.num_classes, raw.in_channels, raw.image_size)


def cell_data(config: Config, raw: RawDataset, device: torch.device) -> CellData:
    """The split of ``config`` (its seed, sizes, validation) as pooled indices on ``device``."""
    data = config.data
    indices = split_indices(len(raw.train_y), len(raw.test_y), data.split,
                            train_size=data.train_size, test_size=data.test_size,
                            val_size=data.val_size, seed=config.seed)
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
