"""The dataset registry and ``load_dataset``: name (+ path) -> RawDataset.

Registered loaders take ``(path, *, cache_dir, download, progress)`` and return a
RawDataset, or the arrays that ``colearning.train(config, data=...)`` takes (converted by
:mod:`colearning.data.arrays`). Decoded cifar10/cifar100/imagefolder arrays are cached (see
``cache``); "arrays" reads an .npz file, already decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from colearning.data import arrays, cache, cifar, imagefolder
from colearning.data.raw import RawDataset
from colearning.errors import ConfigError, DataError
from colearning.registry import Registry

Loader = Callable[..., Any]
DATASETS: Registry[Loader] = Registry("dataset", key="data.name")

# scikit-learn's digits have no official split; ours is fixed: the first 1,437 images
# (80%) train, the last 360 test.
DIGITS_TRAIN_SIZE = 1437


def load_dataset(
    name: str,
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawDataset:
    """Dataset ``name`` (a DATASETS entry) read from ``path`` (None: its default place)."""
    loader = DATASETS.get(name)
    raw = loader(path, cache_dir=cache_dir, download=download, progress=progress)
    return arrays.as_raw(raw, source=name)


def register_dataset(name: str, **meta: Any) -> Callable[[Loader], Loader]:
    """A decorator registering ``loader(path, *, cache_dir, download, progress)`` as
    dataset ``name`` (``data.name=name``; ``data.path`` arrives as ``path``). It returns a
    RawDataset or what ``colearning.train(config, data=...)`` takes: (x_train, y_train,
    x_test, y_test[, x_val, y_val]), a dict of those keys (and ``classes``), or (train, test)
    torch Datasets. Write ``def loader(path=None, **_)`` to ignore the options. Register it
    in a module that configs name in ``plugins: [module]``, so sweep workers and ``--nproc``
    ranks have it too."""
    return DATASETS.register(name, **meta)


@DATASETS.register("arrays")
def load_arrays(
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawDataset:
    """An .npz file of x_train, y_train, x_test, y_test (optional x_val, y_val, classes)
    (:func:`colearning.data.arrays.read_npz`); nothing in it is unpickled."""
    if path is None:
        raise ConfigError(
            "dataset 'arrays' needs data.path=FILE.npz (keys x_train, y_train, x_test, "
            "y_test); in Python, pass the arrays: colearning.train(config, data=...)")
    return arrays.read_npz(path)


@DATASETS.register("digits")
def load_digits(
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawDataset:
    """scikit-learn's 1,797 8x8 digits as uint8 [n, 1, 8, 8]; ``path`` and the rest are unused.

    Read straight from the CSV that scikit-learn bundles (what its ``load_digits`` reads),
    without importing scikit-learn, whose import alone was a large part of every quick
    start (docs/performance.md).
    """
    counts, labels = _digits_table()
    # Pixel values are counts 0..16; stretch them to the usual 0..255 range.
    images = np.round(counts.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)[:, None]
    return RawDataset(
        train_x=images[:DIGITS_TRAIN_SIZE],
        train_y=labels[:DIGITS_TRAIN_SIZE],
        test_x=images[DIGITS_TRAIN_SIZE:],
        test_y=labels[DIGITS_TRAIN_SIZE:],
        classes=[str(digit) for digit in range(10)],
    )


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(pixel counts [1797, 64] float, labels [1797] int64) of scikit-learn's digits."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = (Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" /
           "digits.csv.gz") if spec and spec.submodule_search_locations else None
    if csv is None or not csv.is_file():  # another layout: let scikit-learn find it
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        return bunch.data, bunch.target.astype(np.int64)
    table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def _load_cifar(
    name: str, path: str | None, cache_dir: str | None, download: bool, progress: bool
) -> RawDataset:
    source = cifar.locate(name, path, download=download, progress=progress)
    return cache.cached(
        name, source, lambda: cifar.read(name, source, progress=progress), cache_dir=cache_dir
    )


@DATASETS.register("cifar10")
def load_cifar10(
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawDataset:
    """CIFAR-10 (official pickles) as uint8 [50000|10000, 3, 32, 32], 10 classes."""
    return _load_cifar("cifar10", path, cache_dir, download, progress)


@DATASETS.register("cifar100")
def load_cifar100(
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawDataset:
    """CIFAR-100 (official pickles, fine labels) as uint8 [50000|10000, 3, 32, 32], 100 classes."""
    return _load_cifar("cifar100", path, cache_dir, download, progress)


@DATASETS.register("imagefolder")
def load_imagefolder(
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawDataset:
    """Images under ``<split>/<class>/`` in a folder or tar(.gz) as RGB uint8 [n, 3, H, H]."""
    if path is None:
        raise ConfigError(
            "dataset 'imagefolder' needs a path: a folder, .tar or .tar.gz holding "
            "train/<class>/<image> and test/<class>/<image>"
        )
    source = Path(path).expanduser().absolute()
    if not source.exists():
        raise DataError(f"image folder {source} does not exist; pass an existing folder or tar")
    return cache.cached(
        "imagefolder",
        source,
        lambda: imagefolder.read_imagefolder(source, progress=progress),
        cache_dir=cache_dir,
    )
