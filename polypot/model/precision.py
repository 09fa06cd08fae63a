"""Precision names used in DeePMD-kit model files, mapped to NumPy dtypes."""

from __future__ import annotations

import numpy as np

PRECISIONS: dict[str, type] = {
    "float64": np.float64,
    "float32": np.float32,
    "double": np.float64,
    "float": np.float32,
    "default": np.float64,
}


def to_dtype(precision: str) -> np.dtype:
    """NumPy dtype for a DeePMD-kit precision string ("float64", "float32", "default", ...)."""
    try:
        return np.dtype(PRECISIONS[precision.lower()])
    except KeyError:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}"
        ) from None


def canonical(precision: str) -> str:
    """Canonical name ("float64" or "float32") of a precision string."""
    return to_dtype(precision).name
