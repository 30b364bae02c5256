"""``colearn bench``'s options: comma-separated lists and MODEL:N pairs parsed, checked and
completed from the presets (``--quick``, lighter defaults on CPUs), then the run."""

from __future__ import annotations

import math
from typing import Any

from colearning.bench.harness import run, workloads
from colearning.bench.records import (
    BATCH_SIZES,
    CIFAR_TEST,
    CIFAR_TRAIN,
    DEFAULT_STRATEGIES,
    SGD_IMPLEMENTATIONS,
    Settings,
)
from colearning.errors import ConfigError
from colearning.models import MODELS


def parse_list(text: str, kind: type = str) -> list[Any]:
    """'1,2,10' -> [1, 2, 10]; empty items are dropped."""
    try:
        return [kind(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of {kind.__name__}, got "
                          f"{text!r}") from None


def parse_pairs(text: str) -> list[tuple[str, int]]:
    """'lenet5:50,vgg9:10' -> [('lenet5', 50), ('vgg9', 10)]."""
    pairs = []
    for item in parse_list(text):
        model, _, n = item.partition(":")
        if not n.isdigit():
            raise ConfigError(f"expected MODEL:N (e.g. lenet5:50), got {item!r}")
        pairs.append((model, int(n)))
    return pairs


QUICK = {"models": ["lenet5"], "members": [1, 2], "batch_size": 32, "steps": 2, "warmup": 1,
         "epochs": [("lenet5", 2)], "epoch_sizes": (256, 128), "time_limit": 10.0,
         "min_time": 0.0}
# Lighter defaults on CPUs, so that a plain `colearn bench --device cpu` takes minutes: a
# VGG-9 step of N=50 members at batch 256 would take minutes and ~25 GB there.
CPU_DEFAULTS = {"steps": 5, "warmup": 1, "time_limit": 10.0, "skip": [("vgg9", 50)]}


def bench(*, models: str | None = None, members: str | None = None,
          strategies: str | None = None, steps: int | None = None, warmup: int | None = None,
          device: str = "auto", epoch: str | None = None, epoch_size: str | None = None,
          skip: str | None = None, batch_size: int | None = None, quick: bool = False,
          time_limit: float | None = None, min_time: float | None = None,
          bf16: bool = False, compile: str | None = None,
          channels_last: bool | None = None, sgd: str = "default", seed: int = 0,
          progress: bool = True) -> dict[str, Any]:
    """``colearn bench`` with its options as given on the command line; returns the report.

    Lists are comma-separated strings ("1,2,10,50"); ``epoch`` and ``skip`` are MODEL:N
    pairs ("lenet5:50"). ``quick`` shrinks everything to a seconds-long smoke run (LeNet-5,
    N in {1, 2}, batch 32, 2 timed steps, a 256 + 128 image epoch) unless given explicitly;
    on CPUs, unset options take ``CPU_DEFAULTS``.
    """
    from colearning.training.setup import resolve_device

    for flag, value, low in (("--steps", steps, 1), ("--warmup", warmup, 0),
                             ("--batch-size", batch_size, 1), ("--time-limit", time_limit, None),
                             ("--min-time", min_time, 0)):
        if value is None:
            continue
        bad = not math.isfinite(value) or (value <= 0 if low is None else value < low)
        if bad:
            limit = "> 0" if low is None else f">= {low}"
            raise ConfigError(f"{flag} must be {limit}, got {value}")
    target = resolve_device(device)
    preset: dict[str, Any] = QUICK if quick else CPU_DEFAULTS if target.type == "cpu" else {}
    model_list = parse_list(models) if models else preset.get("models", list(BATCH_SIZES))
    member_list = parse_list(members, int) if members else preset.get("members", [1, 2, 10, 50])
    strategy_list = parse_list(strategies) if strategies else list(DEFAULT_STRATEGIES)
    epochs = parse_pairs(epoch) if epoch else preset.get("epochs", [])
    sizes = tuple(parse_list(epoch_size, int)) if epoch_size else preset.get(
        "epoch_sizes", (CIFAR_TRAIN, CIFAR_TEST))
    if len(sizes) != 2 or min(sizes) < 1:
        raise ConfigError(f"epoch size must be TRAIN,TEST image counts, got {epoch_size!r}")
    if sgd not in SGD_IMPLEMENTATIONS:
        raise ConfigError(f"unknown SGD implementation {sgd!r}; valid: "
                          f"{', '.join(SGD_IMPLEMENTATIONS)}")
    settings = Settings(
        steps=preset.get("steps", 10) if steps is None else steps,
        warmup=preset.get("warmup", 2) if warmup is None else warmup,
        time_limit=preset.get("time_limit", 60.0) if time_limit is None else time_limit,
        min_time=preset.get("min_time", 2.0) if min_time is None else min_time,
        bf16=bf16, compile=compile, channels_last=channels_last, sgd=sgd, seed=seed)
    batch_size = preset.get("batch_size") if batch_size is None else batch_size
    items = workloads(model_list, member_list, strategy_list, batch_size=batch_size,
                      skip=parse_pairs(skip) if skip is not None else preset.get("skip", ()))
    for model, _ in epochs:
        MODELS.get(model)
    return run(items, target, settings, epochs=epochs,
               epoch_sizes=(int(sizes[0]), int(sizes[1])), epoch_batch_size=batch_size,
               progress=progress)
