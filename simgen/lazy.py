"""Lazy names: `"name": "module:attribute"` tables resolved on first access.

Packages use this so importing them stays cheap (no torch, no scikit-learn) until a name is used;
registries (backends, judges, checks) use `resolve` so naming one imports only it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(module_name: str, table: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `table[name]` once and caches it in `namespace`."""

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr)
        namespace[name] = value
        return value

    return __getattr__


def resolve(table: dict[str, str], name: str, kind: str, error: type[Exception]) -> Any:
    """The object `table[name]` points at, imported now; an unknown name raises `error` listing the known ones."""
    from simgen.errors import unknown_name

    target = table.get(name)
    if target is None:
        raise error(unknown_name(kind, name, table))
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
