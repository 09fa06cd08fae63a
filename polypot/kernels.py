"""Faster implementations of hot model functions, registered by backends.

The model is written once against the Array API; where a framework runs that reference code
slowly (too many passes over large arrays), the backend module may register a kernel that
computes the same function its own way (e.g. in cache-sized chunks with a hand-written
derivative). The model asks :func:`find_kernel` with the array namespace at hand and falls back
to its reference code when none is registered. Every registered kernel is tested against the
reference (values, first and second derivatives) in ``tests/backend``.

Set ``POLYPOT_NO_KERNELS=1`` to run the reference code everywhere (for comparisons).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

_KERNELS: dict[tuple[str, str], Callable[..., Any]] = {}


def register_kernel(name: str, namespace_name: str, fn: Callable[..., Any]) -> None:
    """Use ``fn`` for kernel ``name`` when the arrays' namespace module is ``namespace_name``
    (e.g. ``"jax.numpy"``)."""
    _KERNELS[(name, namespace_name)] = fn


def find_kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """The kernel registered for ``name`` and namespace ``xp``, or None (use the reference)."""
    if os.environ.get("POLYPOT_NO_KERNELS", "") not in ("", "0"):
        return None
    return _KERNELS.get((name, getattr(xp, "__name__", "")))
