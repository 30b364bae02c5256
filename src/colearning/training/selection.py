"""Selecting on the validation split, per cell: the best epoch so far (train.keep_best) and
early stopping (train.early_stopping).

    watch = Watch.of(config)              # None: the run selects nothing
    watch.replay(records)                 # a resumed run: its metrics.jsonl so far
    improved = watch.update(record)       # at each epoch's end
    watch.stopped                         # patience used up: the cell ends

The metric is a validation key of the epoch records (train.early_stopping's ``metric``, else
``val/ensemble_accuracy_mean``); which way is better is its metric registry entry's
direction (:func:`colearning.evaluation.selection_direction`). The state is a function of the
records alone, so a resumed run rebuilds it from metrics.jsonl and decides exactly what an
uninterrupted run decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from colearning.config import Config
from colearning.config_checks import SELECTION_METRIC
from colearning.evaluation import selection_direction


@dataclass
class Watch:
    """The best value of one validation metric so far, and the epochs since it improved."""

    metric: str  # e.g. val/ensemble_accuracy_mean
    maximize: bool
    patience: int | None  # epochs without improvement that end the cell; None: never
    min_delta: float = 0.0  # an improvement beats the best by more than this
    best_value: float | None = None
    best_epoch: int | None = None  # 1-based, as the records count epochs
    stale: int = 0  # epochs since the last improvement
    last_epoch: int = 0

    @classmethod
    def of(cls, config: Config) -> Watch | None:
        """The watch of a run's config (None when it neither keeps the best nor stops early)."""
        stopping = config.train.early_stopping
        if not config.train.keep_best and stopping is None:
            return None
        stopping = stopping or {}
        metric = stopping.get("metric", SELECTION_METRIC)
        return cls(metric, selection_direction(metric) == "max", stopping.get("patience"),
                   float(stopping.get("min_delta", 0.0)))

    def update(self, record: dict[str, Any]) -> bool:
        """Take one epoch's record; True when its metric improved on the best so far (a
        missing or non-finite value never does: NaN in memory is null in metrics.jsonl)."""
        value = record.get(self.metric)
        self.last_epoch = record["epoch"]
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        if not finite:
            improved = False
        elif self.best_value is None:
            improved = True
        elif self.maximize:
            improved = value > self.best_value + self.min_delta
        else:
            improved = value < self.best_value - self.min_delta
        if improved:
            self.best_value, self.best_epoch, self.stale = float(value), self.last_epoch, 0
        else:
            self.stale += 1
        return improved

    def replay(self, records: list[dict[str, Any]]) -> Watch:
        for record in records:
            self.update(record)
        return self

    @property
    def stopped(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def detail(self) -> str:
        """The summary's status_detail of a cell that stopped early."""
        best = ("never finite" if self.best_value is None
                else f"best {self.best_value:.6g} at epoch {self.best_epoch}")
        return (f"stopped early after epoch {self.last_epoch}: {self.metric} did not improve "
                f"for {self.patience} epoch{'s' if self.patience != 1 else ''} ({best})")

    def summary(self) -> dict[str, Any]:
        """What summary.json records of the selection."""
        out: dict[str, Any] = {"best_epoch": self.best_epoch, "best_metric": self.metric,
                               "best_value": self.best_value}
        if self.patience is not None:
            out["stopped_early"] = self.stopped
        return out
