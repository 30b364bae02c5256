"""A subset of a dataset's classes (``data.classes``): the run trains, validates and tests on
them, relabelled 0..k-1 in the given order; the other classes' test images are the
out-of-distribution set ``held-out`` (:func:`held_out`).

    raw5 = select_classes(raw, [0, 1, 2, 3, 4])     # RawDataset with 5 classes
    images = held_out(raw, [0, 1, 2, 3, 4])          # uint8 test images of classes 5..9
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from colearning.data.raw import RawDataset
from colearning.errors import ConfigError

__all__ = ["class_indices", "held_out", "select_classes"]


def class_indices(names: Sequence[str], wanted: Sequence[str | int]) -> list[int]:
    """The dataset indices of ``wanted`` (class names, or int indices into ``names``), in
    the given order; a one-line ConfigError for an unknown class, a duplicate or fewer
    than 2."""
    if len(wanted) < 2:
        raise ConfigError(f"data.classes needs at least 2 classes, got {list(wanted)}")
    out = []
    for item in wanted:
        if isinstance(item, bool) or not isinstance(item, (int, str, np.integer)):
            raise ConfigError(f"data.classes entries are class names or indices, got {item!r}")
        if isinstance(item, str):
            if item not in names:
                shown = ", ".join(map(str, names[:20])) + (", ..." if len(names) > 20 else "")
                raise ConfigError(f"data.classes: unknown class {item!r}; the dataset's "
                                  f"classes are {shown} (or their indices 0..{len(names) - 1})")
            index = list(names).index(item)
        else:
            index = int(item)
            if not 0 <= index < len(names):
                raise ConfigError(f"data.classes: class index {index} is out of range; the "
                                  f"dataset has {len(names)} classes (0..{len(names) - 1})")
        if index in out:
            raise ConfigError(f"data.classes names class {names[index]!r} (index {index}) "
                              "twice; give each class once")
        out.append(index)
    return out


def _relabel(x: np.ndarray, y: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    mapping = np.full(int(max(y.max(initial=0), max(keep))) + 1, -1, dtype=np.int64)
    mapping[keep] = np.arange(len(keep))
    new = mapping[y]
    mask = new >= 0
    return x[mask], new[mask]


def select_classes(raw: RawDataset, classes: Sequence[str | int] | None) -> RawDataset:
    """``raw`` restricted to ``classes`` (None: ``raw`` itself) on every side, labels
    re-indexed 0..k-1 in the order given (:func:`class_indices`)."""
    if classes is None:
        return raw
    keep = class_indices(raw.classes, classes)
    sides = {name: _relabel(x, y, keep) for name, x, y in raw.sides()}
    val = sides.get("val")
    out = RawDataset(*sides["train"], *sides["test"], [raw.classes[k] for k in keep],
                     None if val is None else val[0], None if val is None else val[1])
    return out.check(f"data.classes={list(classes)}")


def held_out(raw: RawDataset, classes: Sequence[str | int] | None) -> np.ndarray:
    """The test images [n, C, H, W] (uint8) of the classes ``classes`` leaves out: the
    out-of-distribution set ``held-out`` of a run on those classes (empty for None)."""
    if classes is None:
        return raw.test_x[:0]
    keep = class_indices(raw.classes, classes)
    return raw.test_x[~np.isin(raw.test_y, keep)]
