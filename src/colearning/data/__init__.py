"""Datasets as uint8 arrays, train/test splits as pooled indices, and batched on-device
augmentation.

raw = load_dataset("cifar10")                      # RawDataset, official train/test
raw = as_raw((x_train, y_train, x_test, y_test))   # the user's arrays (numpy or torch)
sides = split_indices(len(raw.train_y), len(raw.test_y), "random", seed=3)  # pooled, per seed
images, labels = take(raw, sides.train)            # uint8 [n, C, H, W], int64 [n]
mean, std = channel_stats(images)                  # per channel, on the [0, 1] scale
x = torch.from_numpy(images[:128]).float() / 255   # one batch, pixels in [0, 1]
x = augment_batch(x, generator)                    # random crop + flip, no Python loop

The training run keeps the pool on the device and converts batches there
(:mod:`colearning.training.data`).
"""

from colearning.data.arrays import as_raw
from colearning.data.augment import augment_batch, channel_stats
from colearning.data.classes import held_out, select_classes
from colearning.data.raw import RawDataset
from colearning.data.sources import DATASETS, load_dataset, register_dataset
from colearning.data.split import SplitIndices, split_indices, take

__all__ = [
    "DATASETS",
    "RawDataset",
    "SplitIndices",
    "as_raw",
    "augment_batch",
    "channel_stats",
    "held_out",
    "load_dataset",
    "register_dataset",
    "select_classes",
    "split_indices",
    "take",
]
