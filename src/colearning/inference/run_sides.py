"""The sides of a run's own data that uncertainty evaluation reads: its test split and
validation split (the run's seed's split, in its classes) and the test images of the
classes data.classes held out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from colearning.config import Config
from colearning.data import RawDataset, as_raw, select_classes, take
from colearning.errors import ConfigError
from colearning.training.data import from_memory, held_out_test, source_raw, split_of


@dataclass
class RunSides:
    """uint8 images [n, C, H, W] and int64 labels [n] of the run's test split and (None
    without one) validation split; ``held_out``: uint8 test images of the held-out
    classes (empty without data.classes)."""

    test_x: np.ndarray
    test_y: np.ndarray
    val_x: np.ndarray | None
    val_y: np.ndarray | None
    held_out: np.ndarray


def run_sides(config: Config, data: Any = None) -> RunSides:
    """The :class:`RunSides` of a run of ``config``. ``data``: what a run trained on data
    given in memory was given (``colearning.train(config, data=...)``); such a run needs it."""
    if data is not None:
        source: RawDataset = as_raw(data)
    elif from_memory(config):
        raise ConfigError("this run was trained on data given in memory (data.name arrays): "
                          "evaluate it from Python with data= the same arrays")
    else:
        source = source_raw(config)
    raw = select_classes(source, config.data.classes)
    split = split_of(config, raw)
    test_x, test_y = take(raw, split.test)
    val_x = val_y = None
    if split.val is not None:
        val_x, val_y = take(raw, split.val)
    return RunSides(test_x, test_y, val_x, val_y, held_out_test(config, source))
