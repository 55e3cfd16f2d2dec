"""Things found by name: one table per axis (methods, backbones, datasets, optimizers).

A config key's choices, its ``--help`` text and its error on a typo are all read from the
table, so a name is typed once, where the thing is defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from jaxdann.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A name -> entry table for the config key ``key`` (e.g. ``"adaptation"``).

    ``registry.register("name", entry)`` adds an entry; ``@registry.register("name")`` does the
    same as a decorator. ``registry.get(name)`` returns it, or raises a :class:`ConfigError`
    naming the key and the registered names.
    """

    def __init__(self, key: str, what: str):
        self.key = key
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"a {self.what} needs a non-empty name without spaces, got {name!r}")

        def add(value: T) -> T:
            if name in self._entries and self._entries[name] is not value:
                raise ValueError(f"{self.what} {name!r} is registered already")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def get(self, name: str) -> T:  # type: ignore[override]
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"config key {self.key}={name!r} is not a registered {self.what}; "
                f"choose one of {', '.join(self.names())}."
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
