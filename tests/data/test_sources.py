"""The dataset registry, load_dataset, digits, and RawDataset checks."""

from __future__ import annotations

import numpy as np
import pytest

from colearning.data import DATASETS, RawDataset, load_dataset
from colearning.errors import ConfigError, DataError


def test_registered_names():
    assert DATASETS.names() == ["arrays", "cifar10", "cifar100", "digits", "imagefolder"]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError,
                       match="unknown dataset 'mnist'; valid: arrays, cifar10, cifar100"):
        load_dataset("mnist")


def test_digits_fixed_split():
    raw = load_dataset("digits", "ignored/path")
    assert raw.train_x.shape == (1437, 1, 8, 8) and raw.test_x.shape == (360, 1, 8, 8)
    assert raw.train_x.dtype == np.uint8 and raw.train_y.dtype == np.int64
    assert raw.train_x.max() == 255 and raw.train_x.min() == 0  # 16 -> 255
    assert (raw.num_classes, raw.in_channels, raw.image_size, raw.n_total) == (10, 1, 8, 1797)
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(raw.test_y, load_digits().target[1437:])
    np.testing.assert_array_equal(raw.train_x[0, 0], np.round(load_digits().images[0] * 255 / 16))


def make_raw(**changes) -> RawDataset:
    fields = {
        "train_x": np.zeros((4, 1, 2, 2), np.uint8),
        "train_y": np.array([0, 1, 0, 1]),
        "test_x": np.zeros((2, 1, 2, 2), np.uint8),
        "test_y": np.array([1, 0]),
        "classes": ["a", "b"],
    }
    return RawDataset(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train_x": np.zeros((4, 1, 2, 2), np.float32)}, "train images must be uint8"),
        ({"test_x": np.zeros((2, 1, 2, 3), np.uint8)}, "test images are 2x3, not square"),
        ({"test_x": np.zeros((2, 3, 2, 2), np.uint8)}, "train images are .* but test images"),
        ({"train_y": np.array([0, 1, 0])}, r"train labels must be int64 \[4\]"),
        ({"test_y": np.array([0, 2])}, r"test labels span \[0, 2\] but there are 2 classes"),
        ({"classes": []}, "no classes"),
        ({"classes": ["a"], "train_y": np.zeros(4, np.int64), "test_y": np.zeros(2, np.int64)},
         r"single class \(a\); a classifier needs at least 2 classes"),
        ({"train_y": np.ones(4, np.int64)},
         r"every train image has the same label \(b\); a classifier needs at least 2"),
    ],
)
def test_check_rejects_inconsistent_data(changes, message):
    with pytest.raises(DataError, match=message):
        make_raw(**changes).check("somewhere")


def test_check_passes_and_returns_self():
    raw = make_raw()
    assert raw.check("somewhere") is raw
