"""Per-epoch schedules by name: one registry for the learning rate (``optim.schedule``) and
the coupling (``loss.beta_schedule``), each with its options (``optim.schedule_options``,
``loss.beta_schedule_options``).

    factor = schedule_factor("step", {"every": 50, "gamma": 0.1}, epoch, epochs)

A schedule is a factor at 0-based ``epoch`` of a run of ``epochs``: on the learning rate
(``optim.lr`` x factor) or on the whole coupling matrix. Each entry declares, from its
options, whether it depends on ``train.epochs`` (:func:`uses_length`): a run on such a
schedule cannot be extended, because its first epochs would differ from a longer straight
run's.

- ``constant``: 1.
- ``warmup`` (``epochs``, default a tenth of the run): linear from 0 at epoch 0 to 1 at
  ``epochs``, then 1.
- ``cosine``: (1 + cos(pi epoch / epochs)) / 2, 1 at the start, near 0 at the end (the
  paper's VGG-9 learning rate).
- ``step`` (``every``, default a third of the run; ``gamma``, default 0.5):
  ``gamma ** (epoch // every)``.

The learning rate may also warm up in front of its schedule (``optim.warmup_epochs``,
:func:`warmed_up`); the coupling never does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from colearning.errors import ConfigError
from colearning.registry import Registry, with_defaults


@dataclass(frozen=True)
class Schedule:
    """A named schedule: ``factor(options, epoch, epochs)`` and the options that fix its
    length (when all of ``fixed_by`` are given, it does not depend on ``train.epochs``;
    ``None``: it always does)."""

    factor: Callable[[dict[str, Any], int, int], float]
    fixed_by: tuple[str, ...] | None = ()


SCHEDULES: Registry[Schedule] = Registry("schedule",
                                       key=("optim.schedule", "loss.beta_schedule"))


def _constant(options: dict[str, Any], epoch: int, epochs: int) -> float:
    with_defaults(options, {}, "schedule constant")
    return 1.0


def _warmup(options: dict[str, Any], epoch: int, epochs: int) -> float:
    length = with_defaults(options, {"epochs": max(1, epochs // 10)}, "schedule warmup")["epochs"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ConfigError(f"warmup option epochs must be an integer >= 1, got {length!r}")
    return min(1.0, epoch / length)


def _cosine(options: dict[str, Any], epoch: int, epochs: int) -> float:
    with_defaults(options, {}, "schedule cosine")
    return 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))


def _step(options: dict[str, Any], epoch: int, epochs: int) -> float:
    chosen = with_defaults(options, {"every": max(1, epochs // 3), "gamma": 0.5}, "schedule step")
    every, gamma = chosen["every"], chosen["gamma"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ConfigError(f"step option every must be an integer >= 1, got {every!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ConfigError(f"step option gamma must be a number > 0, got {gamma!r}")
    return float(gamma) ** (epoch // every)


SCHEDULES.register("constant")(Schedule(_constant))
SCHEDULES.register("warmup")(Schedule(_warmup, fixed_by=("epochs",)))
SCHEDULES.register("cosine")(Schedule(_cosine, fixed_by=None))
SCHEDULES.register("step")(Schedule(_step, fixed_by=("every",)))


def schedule_factor(name: str, options: dict[str, Any], epoch: int, epochs: int) -> float:
    """Schedule ``name``'s factor at 0-based ``epoch`` of ``epochs`` (bad options: one line)."""
    return SCHEDULES.get(name).factor(dict(options), epoch, epochs)


def uses_length(name: str, options: dict[str, Any]) -> bool:
    """Whether schedule ``name`` with ``options`` depends on the run's ``train.epochs``."""
    fixed_by = SCHEDULES.get(name).fixed_by
    return fixed_by is None or not all(key in options for key in fixed_by)


def warmed_up(warmup_epochs: int, name: str, options: dict[str, Any], epoch: int,
              epochs: int) -> float:
    """Schedule ``name``'s factor at 0-based ``epoch`` behind a linear warm-up of
    ``warmup_epochs`` W: (epoch + 1) / (W + 1) for epoch < W (1/(W+1), ..., W/(W+1)), then
    the schedule from its own epoch 0 over the remaining epochs, factor(epoch - W,
    epochs - W). torch's ``SequentialLR([LinearLR(start_factor=1/(W+1), total_iters=W),
    schedule], milestones=[W])`` with the schedule set for ``epochs - W``; W = 0: the
    schedule alone."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    return schedule_factor(name, options, epoch - warmup_epochs, epochs - warmup_epochs)
