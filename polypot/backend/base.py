"""What a backend supplies: an array namespace, parameter conversion, and (optionally) autodiff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Backend(Protocol):
    """A thin adapter around one array framework."""

    name: str
    has_autodiff: bool

    def namespace(self) -> Any:
        """The Array-API namespace used by ``polypot.model`` for this framework's arrays."""

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Convert a NumPy array to this framework's array."""

    def to_numpy(self, x: Any) -> Any:
        """Convert this framework's array to NumPy."""

    def convert_params(self, params: Any) -> Any:
        """Map a parameter pytree of NumPy arrays to this framework's arrays."""

    def scatter_sum(self, data: Any, index: Any, size: int) -> Any:
        """out[f, index[f, a]] += data[f, a] for data (nf, n, k), index (nf, n) -> (nf, size, k)."""

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        """(y = fn(x), pullback) where pullback(c) = d sum(c * y) / dx (a vector-Jacobian product)."""


class NoAutodiffError(RuntimeError):
    """Raised when forces or virials are asked of a backend without automatic differentiation."""


def map_params(params: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every array leaf of a nested dict/list parameter tree (None stays None)."""
    if isinstance(params, dict):
        return {k: map_params(v, fn) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(map_params(v, fn) for v in params)
    if params is None:
        return None
    return fn(params)
