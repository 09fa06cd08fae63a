"""JAX backend: ``jax.numpy`` (an Array-API namespace) with ``jax.vjp``; float64 enabled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402  (after enabling float64)

from .base import map_params  # noqa: E402


class JaxBackend:
    name = "jax"
    has_autodiff = True

    def namespace(self) -> Any:
        return jnp

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return jnp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def convert_params(self, params: Any) -> Any:
        return map_params(params, jnp.asarray)

    def scatter_sum(self, data: Any, index: Any, size: int) -> Any:
        nf = data.shape[0]
        out = jnp.zeros((nf, size, *data.shape[2:]), dtype=data.dtype)
        frames = jnp.arange(nf)[:, None]
        return out.at[frames, index].add(data)

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        y, pull = jax.vjp(fn, x)
        return y, lambda cotangent: pull(cotangent)[0]
