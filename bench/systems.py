"""Benchmark systems: a 192-atom water frame tiled into bigger periodic boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polypot.data.water_box import water_box

WATER = Path(__file__).resolve().parents[2] / "shared" / "data" / "water" / "data_0"


def water_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One 192-atom water frame: coord (192, 3), cell (3, 3), types (192,), and its source."""
    if (WATER / "set.000" / "coord.npy").exists():
        coord = np.load(WATER / "set.000" / "coord.npy")[0].reshape(-1, 3)
        cell = np.load(WATER / "set.000" / "box.npy")[0].reshape(3, 3)
        atype = np.loadtxt(WATER / "type.raw", dtype=np.int64)
        return coord, cell, atype, str(WATER)
    coord, cell, atype = water_box(64, seed=0)
    return coord, cell, atype, "generated water box (1 g/cm3)"


def tiled(natoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The water frame repeated n x n x n (or n x n x 2n ...) times to reach ``natoms`` atoms."""
    coord, cell, atype, _ = water_frame()
    copies = natoms // len(atype)
    if copies * len(atype) != natoms:
        raise ValueError(f"{natoms} is not a multiple of {len(atype)}")
    reps = [1, 1, 1]
    axis = 0
    while np.prod(reps) < copies:
        reps[axis % 3] *= 2
        axis += 1
    if np.prod(reps) != copies:
        raise ValueError(f"{natoms} atoms is not 192 x a power of two")
    shifts = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    big = (coord[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    return big, cell * np.asarray(reps)[:, None], np.tile(atype, copies)
