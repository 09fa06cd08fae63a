"""NumPy backend: the reference namespace; energies only (no automatic differentiation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat.numpy as anp
import numpy as np

from .base import NoAutodiffError, map_params


class NumpyBackend:
    name = "numpy"
    has_autodiff = False

    def namespace(self) -> Any:
        return anp

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def convert_params(self, params: Any) -> Any:
        return map_params(params, np.asarray)

    def scatter_sum(self, data: Any, index: Any, size: int) -> Any:
        nf = data.shape[0]
        out = np.zeros((nf, size, *data.shape[2:]), dtype=data.dtype)
        for f in range(nf):
            np.add.at(out[f], index[f], data[f])
        return out

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
        raise NoAutodiffError(
            "forces and virials need an automatic-differentiation backend; the NumPy backend "
            "gives energies only. Install one (pip install 'polypot[torch]' or 'polypot[jax]') "
            "and pass backend='torch' or 'jax', or call eval(..., ) with forces not requested"
        )
