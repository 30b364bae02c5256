"""Config, sweep and run files as YAML, read so that no file can hurt: one-line errors for
a missing, binary, non-UTF-8, oversized or malformed file, no aliases ("billion laughs"),
no repeated keys; ``key=value`` overrides parsed as YAML values; relative paths resolved
against the file that names them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from colearning.errors import ConfigError


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["loss.beta=-0.2", "train.epochs=3"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. loss.beta=-0.2")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except ConfigError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


# A config, sweep or run file is a few KB; anything this large is some other file.
MAX_YAML_BYTES = 4 * 2**20


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: ``*name`` could expand a few lines into gigabytes (a "billion
    laughs" file), which every later copy or dump of the config would then expand."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"YAML aliases (*{event.anchor}) are not allowed in config files "
                              f"(line {event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A mapping, refusing a key given twice (YAML would silently keep the last)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        where = (f"line {line}" if seen[key] == line
                                 else f"lines {seen[key]} and {line}")
                        raise ConfigError(f"key {key!r} is given twice ({where}); keep one")
                    seen[key] = line
                except TypeError:  # an unhashable key: the base class says so
                    break
        return super().construct_mapping(node, deep=deep)


# Numbers as Python and YAML 1.2 write them: PyYAML follows YAML 1.1, where 1e-3 and 5E-4 (no
# dot, or no exponent sign) are strings. Every float literal Python accepts is a float here.
_FLOAT = re.compile(r"""^[-+]?(?:(?:[0-9][0-9_]*)(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$""")
_NoAliasLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str, source: str = "config") -> Any:
    """A YAML document from ``text`` (no aliases); ConfigError naming ``source`` when it is
    not valid YAML."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source} is not valid YAML{where}") from None
    except ConfigError as error:  # an alias or a repeated key
        raise ConfigError(f"{source}: {error}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` with a one-line error for a missing, unreadable, binary,
    oversized or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"config file {path} is {size / 2**20:.1f} MB; a config is a few "
                              "KB of YAML (is this the right file?)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (is this the right file?)"
                          ) from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    if "\0" in text:
        raise ConfigError(f"config file {path} is binary, not YAML (is this the right file?)")
    values = load_yaml(text, f"config file {path}") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(values)}")
    return values


# Config keys that hold file-system paths: relative ones mean relative to the file that names
# them (a command-line override: to the current directory).
PATH_KEYS = (("data", "path"), ("data", "cache_dir"))


def resolve_paths(values: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """``values`` (a nested config dict) with relative :data:`PATH_KEYS` made absolute
    against ``base_dir`` ("~" expanded)."""
    out = dict(values)
    for section, key in PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            path = Path(node[key]).expanduser()
            if not path.is_absolute():
                out[section] = {**node, key: str((Path(base_dir) / path).absolute())}
    return out
