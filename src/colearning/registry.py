"""Name -> object registries filled by decorators (models, datasets, couplings, ...).

    MODELS = Registry("model", key="model.name")

    @MODELS.register("lenet5", augment=False, batch_size=512)
    def lenet5(num_classes=10): ...

    MODELS.get("lenet5")           # the function
    MODELS.meta("lenet5")          # {"augment": False, "batch_size": 512}
    MODELS.get("lenet")            # ConfigError: unknown model 'lenet'; valid: lenet5, ...

A registry is the only list of its names, and each entry carries its metadata (what other
modules need to know about it, instead of comparing names). ``key`` is the config key whose
value names an entry (a tuple: one registry for several keys); :func:`colearning.names.
check_names` validates every such key of a config against its registry, all the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from colearning.errors import ConfigError

T = TypeVar("T")


def with_defaults(options: dict[str, Any], allowed: dict[str, Any], what: str) -> dict[str, Any]:
    """An entry's ``options`` over its defaults ``allowed``; an option it does not take is a
    one-line ConfigError naming ``what`` (e.g. "coupling ring") and the valid ones."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"unknown option {unknown[0]!r} of {what}; valid: {valid}")
    return {**allowed, **options}


class Registry(Generic[T]):
    """A dict of named entries (with metadata) whose unknown-name error lists the valid names."""

    by_key: ClassVar[dict[str, Registry[Any]]] = {}  # config key -> its registry

    def __init__(self, kind: str, key: str | tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.keys = (key,) if isinstance(key, str) else tuple(key)
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        for one in self.keys:
            Registry.by_key[one] = self

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._meta[name] = meta
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove entry ``name`` (a plugin reloaded in a notebook, a test's own entry)."""
        self.get(name)
        del self._entries[name], self._meta[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}"
            ) from None

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata entry ``name`` was registered with (ConfigError when unknown)."""
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._entries)

    def ordered(self) -> list[str]:
        """The names in the order they were registered."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
