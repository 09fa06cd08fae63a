"""Validation and reshaping of DeepPot-style inputs (DeePMD-kit's argument forms)."""

from __future__ import annotations

from typing import Any

import numpy as np


def prepare_inputs(coords: Any, cells: Any, atom_types: Any, type_map: list[str]
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Return coord (nf, natoms, 3) float64, cell (nf, 3, 3) or None, atype (nf, natoms) int64.

    Accepts coords (nf, natoms*3) or (nf, natoms, 3) or (natoms, 3); cells (nf, 9), (nf, 3, 3),
    (9,), (3, 3) or None (open boundaries); atom_types (natoms,) or (nf, natoms).
    """
    atype = np.asarray(atom_types)
    if atype.ndim not in (1, 2) or not np.issubdtype(atype.dtype, np.integer):
        raise ValueError(
            f"atom_types must be integers of shape (natoms,) or (nf, natoms), got dtype "
            f"{atype.dtype} and shape {atype.shape}"
        )
    natoms = atype.shape[-1]
    coord = np.asarray(coords, dtype=np.float64)
    if coord.ndim == 2 and coord.shape == (natoms, 3) and atype.ndim == 1 and natoms != 3:
        coord = coord[None]
    if coord.ndim == 2:
        if coord.shape[1] != natoms * 3:
            raise ValueError(
                f"coords has shape {coord.shape}; expected (nf, {natoms * 3}) or (nf, {natoms}, 3)"
                f" for {natoms} atoms"
            )
        coord = coord.reshape(coord.shape[0], natoms, 3)
    if coord.ndim != 3 or coord.shape[1:] != (natoms, 3):
        raise ValueError(
            f"coords has shape {coord.shape}; expected (nf, {natoms}, 3) for {natoms} atom types"
        )
    nf = coord.shape[0]
    if atype.ndim == 1:
        atype = np.broadcast_to(atype, (nf, natoms))
    elif atype.shape[0] != nf:
        raise ValueError(f"atom_types has {atype.shape[0]} frames but coords has {nf}")
    atype = np.ascontiguousarray(atype, dtype=np.int64)
    ntypes = len(type_map)
    bad = (atype < 0) | (atype >= ntypes)
    if bad.any():
        t = int(atype[bad][0])
        raise ValueError(
            f"atom_types contains type {t}, outside the model's type_map "
            f"{type_map} (valid types are 0..{ntypes - 1})"
        )
    if not np.isfinite(coord).all():
        f = int(np.where(~np.isfinite(coord).all(axis=(1, 2)))[0][0])
        raise ValueError(f"coords contains NaN or infinite values (frame {f})")
    cell = None
    if cells is not None:
        cell = np.asarray(cells, dtype=np.float64)
        if cell.size == 0:
            cell = None
        else:
            if cell.shape in ((9,), (3, 3)):
                cell = np.broadcast_to(cell.reshape(1, 3, 3), (nf, 3, 3))
            elif cell.ndim == 2 and cell.shape[1] == 9:
                cell = cell.reshape(-1, 3, 3)
            if cell.shape != (nf, 3, 3):
                raise ValueError(
                    f"cells has shape {np.shape(cells)}; expected ({nf}, 9) or ({nf}, 3, 3), "
                    "or None for open boundaries"
                )
            if not np.isfinite(cell).all():
                raise ValueError("cells contains NaN or infinite values")
            vol = np.abs(np.linalg.det(cell))
            scale = np.prod(np.linalg.norm(cell, axis=2), axis=1)
            flat = vol <= 1e-10 * np.maximum(scale, 1e-300)
            if flat.any():
                f = int(np.where(flat)[0][0])
                raise ValueError(
                    f"cell of frame {f} has zero volume (det = {np.linalg.det(cell[f]):.3g}); "
                    "rows must be three independent lattice vectors in Å"
                )
    return coord, cell, atype
