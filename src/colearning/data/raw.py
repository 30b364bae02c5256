"""The in-memory form of a decoded dataset: uint8 images and int64 labels for each side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from colearning.errors import DataError


@dataclass
class RawDataset:
    """Official train/test sides: uint8 images [n, C, H, W] (square), int64 labels [n].

    ``val_x``/``val_y``: a validation side the data brings itself (user arrays' x_val,
    y_val), which then is every run's validation split; None for the built-in datasets,
    whose validation is held out of the training split (data.val_size).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    @property
    def n_val(self) -> int:
        return 0 if self.val_y is None else len(self.val_y)

    @property
    def n_total(self) -> int:
        return len(self.train_y) + len(self.test_y) + self.n_val

    def sides(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(name, images, labels) of each side, in pooled order: train, test, then val."""
        out = [("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)]
        if self.val_x is not None and self.val_y is not None:
            out.append(("val", self.val_x, self.val_y))
        return out

    def check(self, source: str) -> RawDataset:
        """Raise DataError naming ``source`` unless dtypes, shapes and label ranges agree."""
        if not self.classes:
            raise DataError(f"{source}: dataset has no classes; check the source data")
        if (self.val_x is None) != (self.val_y is None):
            raise DataError(f"{source}: the val side has images or labels but not both; give "
                            "both or neither")
        for side, x, y in self.sides():
            if x.dtype != np.uint8 or x.ndim != 4:
                raise DataError(
                    f"{source}: {side} images must be uint8 [n, C, H, W], got {x.dtype} "
                    f"{list(x.shape)}; re-create the data in the expected format"
                )
            if x.shape[2] != x.shape[3]:
                raise DataError(
                    f"{source}: {side} images are {x.shape[2]}x{x.shape[3]}, not square; "
                    "resize them to a square size"
                )
            if y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise DataError(
                    f"{source}: {side} labels must be int64 [{x.shape[0]}], got {y.dtype} "
                    f"{list(y.shape)}; re-create the data in the expected format"
                )
            if len(y) == 0:
                raise DataError(f"{source}: the {side} side has no images; add some")
            if y.min() < 0 or y.max() >= len(self.classes):
                raise DataError(
                    f"{source}: {side} labels span [{y.min()}, {y.max()}] but there are "
                    f"{len(self.classes)} classes; the file is corrupt, replace it"
                )
        for side, x, _ in self.sides()[1:]:
            if self.train_x.shape[1:] != x.shape[1:]:
                raise DataError(
                    f"{source}: train images are {list(self.train_x.shape[1:])} but {side} "
                    f"images are {list(x.shape[1:])}; make every side the same size"
                )
        # One class would train a model that cannot be wrong and report 100% accuracy.
        if len(self.classes) < 2:
            raise DataError(
                f"{source}: the dataset has a single class ({self.classes[0]}); a classifier "
                "needs at least 2 classes, add images of another class"
            )
        if self.train_y.min() == self.train_y.max():
            raise DataError(
                f"{source}: every train image has the same label "
                f"({self.classes[self.train_y[0]]}); a classifier needs at least 2 classes, "
                "add train images of another class"
            )
        return self
