"""Plugins: modules a config names (``plugins: [my_project.colearning_ext]``) that register
models, datasets, couplings, schedules, objectives or metrics in the library's registries.

They are imported whenever a config is read (:func:`colearning.config.config_from_dict`),
so a plugin's entries exist in every process the library starts (sweep workers, Ray tasks,
``--nproc`` ranks, a resume, ``load_ensemble``, a report) without registering them again.
A plugin is an importable module name (an installed package, or a module in the current
directory or on ``sys.path``), never a file path; importing it runs it, as ``import`` does.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from types import ModuleType

from colearning.errors import ConfigError

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def import_plugins(names: list[str]) -> None:
    """Import each module of ``names`` (once per process; a one-line ConfigError when one
    is not a module name or cannot be imported)."""
    for name in names:
        if not isinstance(name, str) or not _MODULE.match(name):
            raise ConfigError(f"plugins: {name!r} is not a module name (like "
                              "my_project.colearning_ext); a plugin is imported, never a path")
        try:
            import_user_module(name)
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the plugin raised: one line
            detail = " ".join(str(error).split())[:200]
            raise ConfigError(f"plugins: cannot import {name!r} ({type(error).__name__}"
                              f"{': ' + detail if detail else ''})") from None


def import_user_module(name: str) -> ModuleType:
    """Import module ``name`` as ``python -m`` would find it: the current directory is
    searched too (after the installed packages, so it shadows none), which the ``colearn``
    command's own path lacks. Sweep workers and ``--nproc`` ranks start in the same
    directory, so a module beside the user's config is found in every process."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    return importlib.import_module(name)
