"""Name -> object registries filled by decorators (models, datasets, combiners, ...).

    MODELS = Registry("model")

    @MODELS.register("lenet5")
    def lenet5(num_classes=10): ...

    MODELS.get("lenet5")     # the function
    MODELS.get("lenet")      # ConfigError: unknown model 'lenet'; valid: lenet5, mlp, vgg9
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from colearning.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries whose unknown-name error lists the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
