"""Validation and normalisation of the inputs of :func:`build_neighbor_data`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# |det(cell)| below this fraction of |a| |b| |c| counts as a degenerate (flat) cell
_FLAT_CELL_TOL = 1e-8
# |det(cell)| (Å^3) below this counts as zero volume whatever the shape
_MIN_VOLUME = 1e-6
# refuse cells so small that more than this many cell images lie within reach of rcut
_MAX_CELL_IMAGES = 10**6


class CheckedInputs(NamedTuple):
    """Validated inputs.

    coord: (nf, natoms, 3) floating (Å), the caller's array (integers promoted to float64).
    cell: (nf, 3, 3) float64 (Å), rows are lattice vectors, or None for open boundaries.
    atype: (nf, natoms) int64, non-negative.
    rcut: cutoff radius (Å), positive and finite.
    sel: (nsec,) int64 capacity of each section.
    mixed: True when ``sel`` was a single int (one section for all types).
    """

    coord: np.ndarray
    cell: np.ndarray | None
    atype: np.ndarray
    rcut: float
    sel: np.ndarray
    mixed: bool


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _check_coord(coord: object) -> np.ndarray:
    arr = np.asarray(coord)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise ValueError(f"coord must be a real floating array, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"coord must have shape (nf, natoms, 3), got {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        raise ValueError(
            f"coord contains NaN or infinite values at frame {int(np.flatnonzero(bad)[0])}"
        )
    return arr


def _check_cell(cell: object, nf: int) -> np.ndarray | None:
    if cell is None:
        return None
    arr = np.asarray(cell)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"cell must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.shape != (nf, 3, 3):
        raise ValueError(
            f"cell must have shape (nf, 3, 3) = ({nf}, 3, 3) (rows are lattice vectors), "
            f"got {arr.shape}"
        )
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        raise ValueError(
            f"cell contains NaN or infinite values at frame {int(np.flatnonzero(bad)[0])}"
        )
    det = np.linalg.det(arr) if nf else np.zeros(0)
    scale = np.prod(np.linalg.norm(arr, axis=2), axis=1)
    flat = (np.abs(det) <= _FLAT_CELL_TOL * scale) | (np.abs(det) <= _MIN_VOLUME)
    if flat.any():
        f = int(np.flatnonzero(flat)[0])
        raise ValueError(f"cell of frame {f} has zero volume (det={det[f]:.6g})")
    return arr


def _check_atype(atype: object, nf: int, natoms: int) -> np.ndarray:
    arr = np.asarray(atype)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"atype must be an integer array, got dtype {arr.dtype}")
    if arr.shape == (natoms,):
        arr = np.broadcast_to(arr, (nf, natoms))
    elif arr.shape != (nf, natoms):
        raise ValueError(
            f"atype must have shape (natoms,) = ({natoms},) or (nf, natoms) = "
            f"({nf}, {natoms}), got {arr.shape}"
        )
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"atype must be non-negative, found {int(arr.min())}")
    return arr


def _check_rcut(rcut: object) -> float:
    if not isinstance(rcut, numbers.Real) or isinstance(rcut, bool | np.bool_):
        raise ValueError(f"rcut must be a positive real number (Å), got {rcut!r}")
    value = float(rcut)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"rcut must be a positive finite number (Å), got {value}")
    return value


def _check_sel(sel: object) -> tuple[np.ndarray, bool]:
    if _is_int(sel):
        if int(sel) < 0:  # type: ignore[call-overload]
            raise ValueError(f"sel must be non-negative, got {sel}")
        return np.array([int(sel)], dtype=np.int64), True  # type: ignore[call-overload]
    if isinstance(sel, Sequence | np.ndarray) and not isinstance(sel, str | bytes):
        items = list(sel)
        if not items:
            raise ValueError("sel must be an int or a non-empty list of ints (one per type)")
        if not all(_is_int(s) for s in items):
            raise ValueError(f"sel must contain only ints, got {items!r}")
        arr = np.array([int(s) for s in items], dtype=np.int64)
        if (arr < 0).any():
            raise ValueError(f"sel entries must be non-negative, got {items!r}")
        return arr, False
    raise ValueError(f"sel must be an int or a list of ints (one per type), got {sel!r}")


def check_inputs(
    coord: object, cell: object, atype: object, rcut: object, sel: object
) -> CheckedInputs:
    """Validate the arguments of :func:`build_neighbor_data`; raise ``ValueError`` if bad."""
    coord_arr = _check_coord(coord)
    nf, natoms = coord_arr.shape[:2]
    cell_arr = _check_cell(cell, nf)
    atype_arr = _check_atype(atype, nf, natoms)
    rcut_val = _check_rcut(rcut)
    sel_arr, mixed = _check_sel(sel)
    if not mixed and atype_arr.size and atype_arr.max() >= sel_arr.size:
        raise ValueError(
            f"atype contains type {int(atype_arr.max())} but sel has {sel_arr.size} "
            "entries (one per type)"
        )
    if cell_arr is not None:
        _check_cell_images(cell_arr, rcut_val)
    return CheckedInputs(coord_arr, cell_arr, atype_arr, rcut_val, sel_arr, mixed)


def _check_cell_images(cell: np.ndarray, rcut: float) -> None:
    """Refuse cells that need an absurd number of periodic images (likely a unit error).

    cell: (nf, 3, 3) float64 (Å), non-degenerate. The number of cell images searched is
    prod_k (2 ceil(rcut / d_k) + 1), with d_k the spacing of the lattice planes k.
    """
    volume = np.abs(np.linalg.det(cell))
    area = np.linalg.norm(np.cross(np.roll(cell, -1, axis=1), np.roll(cell, -2, axis=1)), axis=2)
    spacing = volume[:, None] / area
    images = np.prod(2.0 * np.ceil(rcut / spacing) + 1.0, axis=1)
    too_many = images > _MAX_CELL_IMAGES
    if too_many.any():
        f = int(np.flatnonzero(too_many)[0])
        raise ValueError(
            f"cell of frame {f} is too small for rcut={rcut}: lattice plane spacings "
            f"{np.array2string(spacing[f], precision=4)} Å would need about "
            f"{images[f]:.3g} periodic images of the cell (limit {_MAX_CELL_IMAGES}); "
            "check the cell and its units"
        )
