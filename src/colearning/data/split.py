"""Train/test splits of a RawDataset as pooled indices: the official one (optionally
subsampled) or a random one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from colearning.data.raw import RawDataset
from colearning.errors import ConfigError

SPLITS = ("official", "random")


@dataclass
class SplitIndices:
    """Pooled indices (sorted int64) of a split's sides: official train side first, then the
    official test side (index ``n_train + j`` is test image j), then the data's own
    validation side if it has one (index ``n_train + n_test + j`` is validation image j)."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray | None = None


def split_indices(
    n_train: int,
    n_test: int,
    split: str = "official",
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    val_size: int = 0,
    seed: int = 0,
    n_val: int = 0,
) -> SplitIndices:
    """Which pooled images each side of a split gets, without touching the images (a pack
    of sweep cells keeps one pool on the device and one set of indices per cell; :func:`take`
    reads the images of a side).

    "official": every image of each side, or with ``train_size``/``test_size`` a random
    subset of that side drawn with ``seed``. "random": one permutation of the pooled images
    from ``np.random.default_rng(seed)``; test is its first ``test_size`` images (default:
    the official test size), train the next ``train_size`` (default: all the rest). Indices
    are returned sorted, so images keep their pooled order. Same arguments, same split.

    ``val_size`` images are then held out of the training split for validation (model and
    coupling selection), drawn per seed from a stream of their own, so ``val_size=0`` gives
    exactly the split of the same arguments without it and the test split never changes.

    ``n_val``: validation images the data brings itself (pooled after the test side). They
    are the validation split, whatever the seed; ``val_size`` must then be 0 or ``n_val``.
    """
    rng = np.random.default_rng(seed)
    if split == "official":
        train_size = _size(
            "train_size", train_size, n_train, f"the {n_train} official train images"
        )
        test_size = _size("test_size", test_size, n_test, f"the {n_test} official test images")
        train_indices = _subset(rng.permutation(n_train), train_size, n_train)
        test_indices = _subset(rng.permutation(n_test), test_size, n_test) + n_train
    elif split == "random":
        n_total = n_train + n_test
        test_size = _size(
            "test_size",
            test_size,
            n_test,
            f"the {n_total} pooled images less one for train",
            available=n_total - 1,
        )
        rest = n_total - test_size
        train_size = _size(
            "train_size",
            train_size,
            rest,
            f"the {rest} pooled images left after {test_size} test images",
        )
        order = rng.permutation(n_total)
        test_indices = np.sort(order[:test_size])
        train_indices = np.sort(order[test_size : test_size + train_size])
    else:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    val_indices = None
    if n_val:
        if val_size not in (0, n_val):
            raise ConfigError(
                f"the data brings its own {n_val} validation images (x_val), which are the "
                f"validation split; set data.val_size to 0 or {n_val}, not {val_size}")
        val_indices = np.arange(n_train + n_test, n_train + n_test + n_val)
    elif val_size:
        if isinstance(val_size, bool) or not isinstance(val_size, int | np.integer) \
                or val_size < 0:
            raise ConfigError(f"val_size must be a non-negative integer, got {val_size!r}")
        if val_size >= len(train_indices):
            raise ConfigError(
                f"val_size={val_size} leaves no training images (the training split has "
                f"{len(train_indices)}); use at most {len(train_indices) - 1}"
            )
        held = np.zeros(len(train_indices), dtype=bool)
        held[np.random.default_rng([seed, _VAL_STREAM]).permutation(len(train_indices))
             [:val_size]] = True
        val_indices, train_indices = train_indices[held], train_indices[~held]
    return SplitIndices(train_indices.astype(np.int64), test_indices.astype(np.int64),
                        None if val_indices is None else val_indices.astype(np.int64))


# Second entropy word of the validation stream: np.random.default_rng([seed, _VAL_STREAM]).
_VAL_STREAM = 0x76616C  # "val"


def _size(
    name: str, value: int | None, default: int, what: str, *, available: int | None = None
) -> int:
    """``value`` checked against what is available, or ``default`` when None."""
    available = default if available is None else available
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if value > available:
        raise ConfigError(
            f"{name}={value} is larger than {what} ({available} available); use at most {available}"
        )
    return int(value)


def _subset(order: np.ndarray, size: int, n: int) -> np.ndarray:
    # The full side keeps its order as is, which also lets take return views, not copies.
    return np.arange(n) if size == n else np.sort(order[:size])


def take(raw: RawDataset, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels at pooled ``indices`` without building the pooled array."""
    start, parts = 0, []
    for _, side_x, side_y in raw.sides():
        stop = start + len(side_y)
        if len(indices) == len(side_y) and len(indices) and indices[0] == start \
                and indices[-1] == stop - 1:
            return side_x, side_y  # a whole side (the indices are sorted and distinct)
        parts.append((start, stop, side_x, side_y))
        start = stop
    images = np.empty((len(indices), *raw.train_x.shape[1:]), dtype=raw.train_x.dtype)
    labels = np.empty(len(indices), dtype=raw.train_y.dtype)
    for start, stop, side_x, side_y in parts:
        here = (indices >= start) & (indices < stop)
        images[here] = side_x[indices[here] - start]
        labels[here] = side_y[indices[here] - start]
    return images, labels
