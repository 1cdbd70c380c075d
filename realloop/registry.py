"""Registry: the one way realloop maps a name from a config to the code it builds (tasks, experts, node kinds,
transports, converters, policies, drivers).

Entries are ``"module:attribute"`` strings inside realloop, imported on first use, so listing the names never
imports heavy optional code (MuJoCo, torch). Names come from configs and command lines; the targets never do,
so nothing read from disk chooses what gets imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any


class Registry:
    """Named entries of one kind; ``get(name)`` imports and returns the entry, with an error listing the known
    names for an unknown one."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        for name, target in entries.items():
            if not target.startswith("realloop.") or ":" not in target:
                raise ValueError(f"{kind} {name!r}: entry {target!r} must be 'realloop.module:attribute'")
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}")
        module, attr = self._entries[name].split(":")
        return getattr(importlib.import_module(module), attr)
