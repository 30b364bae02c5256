"""Datasets as uint8 arrays, train/test splits, and batched on-device augmentation.

raw = load_dataset("cifar10")                      # RawDataset, official train/test
split = make_split(raw, "random", seed=3)          # pooled images, redrawn per seed
x = to_tensors(split.train_x, "cuda", mean=m, std=s)
x = augment_batch(x[:128], generator)              # random crop + flip, no Python loop
"""

from colearning.data.augment import augment_batch, channel_stats, to_tensors
from colearning.data.raw import RawDataset
from colearning.data.sources import DATASETS, load_dataset
from colearning.data.split import Split, SplitIndices, make_split, split_indices, take

__all__ = [
    "DATASETS",
    "RawDataset",
    "Split",
    "SplitIndices",
    "augment_batch",
    "channel_stats",
    "load_dataset",
    "make_split",
    "split_indices",
    "take",
    "to_tensors",
]
