"""A tiny name -> object registry for real extension points (formats, templates, stages, adapters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from lmforge.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps user-facing names to objects.

    Example:
        FORMATS = Registry("formatting")

        @FORMATS.register("alpaca")
        def convert_alpaca(...): ...

        FORMATS.get("alpaca")
    """

    def __init__(self, key: str):
        self.key = key  # the config key users set to pick an entry; named in errors
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.key} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.key} '{name}'{did_you_mean(name, self._entries)}; "
                f"choose one of: {', '.join(sorted(self._entries))}"
            ) from None

    def unregister(self, name: str) -> T:
        """Remove an entry and return it (a test that registers a toy entry removes it again)."""
        return self._entries.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        """Names in registration order (built-ins first, as they are declared)."""
        return iter(list(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
