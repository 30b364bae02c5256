"""The config's value checks that span several keys (numbers, objective, optimizer, growth).

Kept apart from :mod:`colearning.config` (the typed sections) so each stays small; the
config calls these from ``validate`` with a :class:`colearning.config.Config` (typed
``Any`` here: this module sits below the config).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from colearning.errors import ConfigError

# Integers travel into numpy and torch as int64; a seed is a non-negative one.
INT_RANGE = (-(2**63), 2**63 - 1)


def _numbers(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted key, number) inside a config value, through nested dicts and lists."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item, key)


def validate_numbers(config: Any) -> None:
    """Every number in the config is finite and fits int64; the seed is >= 0."""
    for key, value in _numbers(config.to_dict(), "config"):
        key = key.removeprefix("config.")
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ConfigError(f"{key}={value} is out of range; integers must fit in 64 bits")
    if config.seed < 0:
        raise ConfigError(f"seed must be >= 0 (any integer up to 2^63 - 1), got {config.seed}")


def validate_objective(config: Any) -> None:
    loss = config.loss
    weight = loss.joint_weight
    if loss.objective == "interpolated":
        if weight is None or not 0.0 <= weight <= 1.0:
            raise ConfigError(f"loss.objective=interpolated needs loss.joint_weight in [0, 1] "
                              f"(lambda), got {weight!r}")
    elif weight is not None:
        raise ConfigError(f"loss.joint_weight applies to loss.objective=interpolated only, not "
                          f"{loss.objective} (joint is lambda = 1); remove it")
    if loss.objective != "colearning":
        if loss.beta is not None or loss.beta_bar is not None:
            raise ConfigError(f"loss.beta / loss.beta_bar apply to loss.objective=colearning "
                              f"only; remove them for {loss.objective}")
        if loss.kl_reduction != "batchmean":
            raise ConfigError(f"loss.kl_reduction applies to loss.objective=colearning only; "
                              f"remove it for {loss.objective}")
        if config.expand.source is not None:
            raise ConfigError(f"growing an ensemble trains with loss.objective=colearning; "
                              f"{loss.objective} is not supported there")


def check_adam_options(betas: Any, eps: Any) -> None:
    """Adam's (and AdamW's) options: betas two numbers in [0, 1), eps > 0 (one-line error)."""
    numbers = isinstance(betas, (list, tuple)) and len(betas) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
    if not numbers or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ConfigError(f"optim.eps must be a number > 0, got {eps!r}")


def validate_optim(config: Any) -> None:
    """optim.betas and optim.eps (adam, adamw; checked whatever optim.name, since a bad value
    is a mistake either way) and optim.warmup_epochs >= 0."""
    optim = config.optim
    check_adam_options(optim.betas, optim.eps)
    if optim.warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be >= 0, got {optim.warmup_epochs}")


def validate_expand(config: Any, modes: tuple[str, ...]) -> None:
    expand = config.expand
    if expand.source is None:
        if expand.mode is not None or expand.add or expand.margin:
            raise ConfigError("expand.mode/add/margin need expand.source (the run directory to "
                              "grow); use colearn expand RUN_DIR --add M --mode MODE")
        return
    if expand.mode not in modes:
        raise ConfigError(f"expand.mode={expand.mode!r} is not valid; valid: "
                          f"{', '.join(modes)}")
    if expand.add < 1:
        raise ConfigError(f"expand.add must be >= 1 (new members), got {expand.add}")
    if expand.margin < 0:
        raise ConfigError(f"expand.margin must be >= 0, got {expand.margin}")
    if expand.margin and expand.mode != "boost":
        raise ConfigError(f"expand.margin applies to mode boost only, not {expand.mode}")
    if config.ensemble.n_members <= expand.add:
        raise ConfigError(
            f"ensemble.n_members={config.ensemble.n_members} must be the source's N plus "
            f"expand.add={expand.add}"
        )


def validate_distill(config: Any) -> None:
    """A distilled run (distill.teacher) trains with loss.objective=distill and the other
    way round; T > 0, alpha in [0, 1]. (Whether the teacher fits is the training's:
    :func:`colearning.training.teacher.check_teacher`.)"""
    distill, objective = config.distill, config.loss.objective
    if (distill.teacher is None) != (objective != "distill"):
        raise ConfigError("loss.objective=distill and distill.teacher go together (the run "
                          "directory of the teaching ensemble); use colearn distill RUN_DIR")
    if not distill.temperature > 0:
        raise ConfigError(f"distill.temperature must be > 0, got {distill.temperature}")
    if not 0.0 <= distill.weight <= 1.0:
        raise ConfigError(f"distill.weight (alpha, the soft term's weight) must be in [0, 1], "
                          f"got {distill.weight}")
    if distill.teacher is not None and config.expand.source is not None:
        raise ConfigError("a run is grown (expand.source) or distilled (distill.teacher), "
                          "not both")


# What train.keep_best selects on when train.early_stopping names no metric.
SELECTION_METRIC = "val/ensemble_accuracy_mean"
EARLY_STOPPING_KEYS = ("metric", "patience", "min_delta")


def validate_selection(config: Any) -> None:
    """train.keep_best and train.early_stopping select on a validation split; the
    early_stopping mapping is {metric, patience, min_delta}. (Whether its metric exists and
    which way is better is the metric registry's: :func:`colearning.names.check_names`.)"""
    train = config.train
    stopping = train.early_stopping
    if (train.keep_best or stopping is not None) and config.data.val_size < 1:
        which = "train.keep_best" if train.keep_best else "train.early_stopping"
        raise ConfigError(f"{which} selects on a validation split: set data.val_size > 0")
    if stopping is None:
        return
    unknown = sorted(set(stopping) - set(EARLY_STOPPING_KEYS))
    if unknown:
        raise ConfigError(f"unknown config key train.early_stopping.{unknown[0]}; valid keys "
                          "here: " + ", ".join(f"train.early_stopping.{key}"
                                               for key in EARLY_STOPPING_KEYS))
    patience = stopping.get("patience")
    if type(patience) is not int or patience < 1:
        raise ConfigError("train.early_stopping.patience must be an integer >= 1 (epochs "
                          f"without improvement before the run ends), got {patience!r}")
    metric = stopping.get("metric", SELECTION_METRIC)
    if not isinstance(metric, str):
        raise ConfigError(f"train.early_stopping.metric must be a validation metric key like "
                          f"{SELECTION_METRIC}, got {metric!r}")
    delta = stopping.get("min_delta", 0.0)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta < 0:
        raise ConfigError(f"train.early_stopping.min_delta must be a number >= 0, got "
                          f"{delta!r}")


def validate_classes(classes: Any) -> None:
    """data.classes: null, or at least 2 distinct class names or indices (whether the
    dataset has them is checked when it is read: colearning.data.select_classes)."""
    if classes is None:
        return
    if len(classes) < 2:
        raise ConfigError(f"data.classes needs at least 2 classes (or null for all), got "
                          f"{classes}")
    if len(set(classes)) != len(classes):
        twice = next(c for c in classes if classes.count(c) > 1)
        raise ConfigError(f"data.classes names {twice!r} twice; give each class once")
    if any(isinstance(c, int) and c < 0 for c in classes):
        raise ConfigError(f"data.classes indices must be >= 0, got {classes}")
