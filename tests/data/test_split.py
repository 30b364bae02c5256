"""split_indices and take: the official split (optionally subsampled) and seeded random
pooled splits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from colearning.data import RawDataset, split_indices, take
from colearning.errors import ConfigError


def make_split(raw: RawDataset, split: str = "official", **options) -> SimpleNamespace:
    """Each side's pooled indices (``train_indices``, ...) and its images and labels
    (``train_x``, ``train_y``, ...) as take reads them; val None without val_size."""
    indices = split_indices(len(raw.train_y), len(raw.test_y), split, **options)
    sides = {}
    for side in ("train", "test", "val"):
        chosen = getattr(indices, side)
        x, y = take(raw, chosen) if chosen is not None else (None, None)
        sides.update({f"{side}_indices": chosen, f"{side}_x": x, f"{side}_y": y})
    return SimpleNamespace(**sides)


@pytest.fixture
def raw() -> RawDataset:
    """30 train + 10 test 2x2 images whose first pixel is their pooled index."""
    pooled = np.zeros((40, 1, 2, 2), dtype=np.uint8)
    pooled[:, 0, 0, 0] = np.arange(40)
    labels = np.arange(40, dtype=np.int64) % 3
    return RawDataset(pooled[:30], labels[:30], pooled[30:], labels[30:], ["a", "b", "c"])


def check_consistent(split, raw: RawDataset) -> None:
    """Each image and label is the pooled one its index names."""
    pooled_y = np.concatenate([raw.train_y, raw.test_y])
    for x, y, indices in (
        (split.train_x, split.train_y, split.train_indices),
        (split.test_x, split.test_y, split.test_indices),
    ):
        assert indices.dtype == np.int64 and x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0, 0, 0], indices)
        np.testing.assert_array_equal(y, pooled_y[indices])
    assert not set(split.train_indices) & set(split.test_indices)


def test_official_is_the_dataset_own_split(raw):
    split = make_split(raw)
    np.testing.assert_array_equal(split.train_indices, np.arange(30))
    np.testing.assert_array_equal(split.test_indices, np.arange(30, 40))
    assert split.train_x is raw.train_x and split.test_y is raw.test_y  # no copies
    check_consistent(split, raw)


def test_official_subset(raw):
    split = make_split(raw, "official", train_size=12, test_size=4, seed=5)
    assert len(split.train_y) == 12 and len(split.test_y) == 4
    assert split.train_indices.max() < 30 and split.test_indices.min() >= 30
    check_consistent(split, raw)
    again = make_split(raw, "official", train_size=12, test_size=4, seed=5)
    np.testing.assert_array_equal(split.train_indices, again.train_indices)
    other = make_split(raw, "official", train_size=12, test_size=4, seed=6)
    assert not np.array_equal(split.train_indices, other.train_indices)


def test_random_keeps_official_sizes_and_mixes_sides(raw):
    split = make_split(raw, "random", seed=0)
    assert len(split.train_y) == 30 and len(split.test_y) == 10
    assert sorted([*split.train_indices, *split.test_indices]) == list(range(40))
    assert split.test_indices.min() < 30  # some official train images went to test
    check_consistent(split, raw)


def test_random_follows_default_rng_permutation(raw):
    split = make_split(raw, "random", train_size=20, test_size=7, seed=3)
    order = np.random.default_rng(3).permutation(40)
    np.testing.assert_array_equal(split.test_indices, np.sort(order[:7]))
    np.testing.assert_array_equal(split.train_indices, np.sort(order[7:27]))
    check_consistent(split, raw)


def test_random_same_seed_same_split(raw):
    first, second = make_split(raw, "random", seed=9), make_split(raw, "random", seed=9)
    np.testing.assert_array_equal(first.test_indices, second.test_indices)
    np.testing.assert_array_equal(first.train_x, second.train_x)
    assert not np.array_equal(first.test_indices, make_split(raw, "random", seed=10).test_indices)


def test_random_test_size_alone_leaves_the_rest_for_train(raw):
    split = make_split(raw, "random", test_size=25)
    assert (len(split.test_y), len(split.train_y)) == (25, 15)


@pytest.mark.parametrize(
    ("split", "sizes", "message"),
    [
        ("official", {"train_size": 31}, "train_size=31 is larger than the 30 official train"),
        ("official", {"test_size": 11}, "test_size=11 is larger than the 10 official test"),
        ("random", {"test_size": 40}, "test_size=40 is larger than the 40 pooled images less one"),
        ("random", {"test_size": 10, "train_size": 31}, r"train_size=31 .* \(30 available\)"),
        ("random", {"train_size": 0}, "train_size must be a positive integer, got 0"),
        ("official", {"test_size": 2.5}, "test_size must be a positive integer"),
    ],
)
def test_size_errors(raw, split, sizes, message):
    with pytest.raises(ConfigError, match=message):
        make_split(raw, split, **sizes)


def test_unknown_split(raw):
    with pytest.raises(ConfigError, match="unknown split 'kfold'; valid: official, random"):
        make_split(raw, "kfold")


@pytest.mark.parametrize("kind", ["official", "random"])
def test_validation_is_held_out_of_the_training_split(raw, kind):
    without = make_split(raw, kind, seed=3)
    split = make_split(raw, kind, val_size=7, seed=3)
    assert without.val_x is None and without.val_indices is None
    # the test split is untouched; train + val is the training split of val_size=0
    np.testing.assert_array_equal(split.test_indices, without.test_indices)
    assert len(split.val_indices) == 7
    assert not set(split.val_indices) & set(split.train_indices)
    assert sorted([*split.val_indices, *split.train_indices]) == list(without.train_indices)
    np.testing.assert_array_equal(split.val_x[:, 0, 0, 0], split.val_indices)
    check_consistent(split, raw)
    # per seed, deterministic
    again = make_split(raw, kind, val_size=7, seed=3)
    np.testing.assert_array_equal(again.val_indices, split.val_indices)
    other = make_split(raw, kind, val_size=7, seed=4)
    assert not np.array_equal(other.val_indices, split.val_indices)


def test_validation_must_leave_training_images(raw):
    with pytest.raises(ConfigError, match="val_size=30 leaves no training images"):
        make_split(raw, "official", val_size=30)
