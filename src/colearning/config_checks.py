"""The config's value checks that span several keys (numbers, objective, growth).

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
