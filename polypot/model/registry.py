"""Registries of descriptors and fittings, keyed by DeePMD-kit type names.

Other packages add entries through the ``polypot.plugins`` entry-point group: each entry point is
a module imported once, whose import registers its classes with :func:`register_descriptor` or
:func:`register_fitting`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .errors import ModelFormatError

DESCRIPTORS: dict[str, Any] = {}
FITTINGS: dict[str, Any] = {}
_plugins_loaded = False


def register_descriptor(*names: str) -> Callable[[type], type]:
    """Class decorator: register a descriptor class under one or more type names."""

    def wrap(cls: type) -> type:
        for n in names:
            DESCRIPTORS[n] = cls
        return cls

    return wrap


def register_fitting(*names: str) -> Callable[[type], type]:
    """Class decorator: register a fitting class under one or more type names."""

    def wrap(cls: type) -> type:
        for n in names:
            FITTINGS[n] = cls
        return cls

    return wrap


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="polypot.plugins"):
        ep.load()


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    # make sure the built-in classes are registered
    from . import descriptor, fitting  # noqa: F401

    if name not in table:
        _load_plugins()
    if name not in table:
        raise ModelFormatError(
            f"unknown {kind} type {name!r}; known types: {', '.join(sorted(table))}"
        )
    return table[name]


def descriptor_class(name: str) -> Any:
    """The descriptor class registered as ``name`` (e.g. "se_e2_a", "se_atten", "dpa1")."""
    return _lookup(DESCRIPTORS, "descriptor", name)


def fitting_class(name: str) -> Any:
    """The fitting class registered as ``name`` (e.g. "ener")."""
    return _lookup(FITTINGS, "fitting", name)
