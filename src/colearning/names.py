"""Every config key that names a registry entry, checked against that registry.

    check_names(config)   # ConfigError: loss.divergence='emd' is not valid; valid: js, kl, ...

The registries (:class:`colearning.registry.Registry`) are the only lists of names: each
declares the config key(s) its names go in (``Registry(..., key="loss.coupling")``), and
this module checks all of them the same way. It imports the modules that fill the
registries, so it sits above them; the typed config below checks types, ranges and the
fixed choices of its own fields.
"""

from __future__ import annotations

from colearning import couplings, data, losses, models, optim, schedules  # noqa: F401 (registries)
from colearning.config import Config
from colearning.config_checks import SELECTION_METRIC
from colearning.errors import ConfigError
from colearning.evaluation import selection_direction
from colearning.registry import Registry


def check_names(config: Config) -> None:
    """ConfigError (one line, the valid names) for a config key naming no registry entry."""
    for key, registry in sorted(Registry.by_key.items()):
        name = config.get(key)
        if key == "model.name" and ":" in name:  # an import path: it must resolve
            models.model_builder(name)
        elif name not in registry:
            raise ConfigError(f"{key}={name!r} is not valid; valid: "
                              f"{', '.join(registry.names())}")
    if config.train.early_stopping is not None:  # a metric key: the metric registry's
        selection_direction(config.train.early_stopping.get("metric", SELECTION_METRIC))
