"""A generated periodic water box (for demos, tests and benchmarks when no data is at hand)."""

from __future__ import annotations

import numpy as np

WATER_MASS_G = 18.015 / 6.02214076e23


def water_box(n_molecules: int = 64, density: float = 1.0, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (3n, 3) Å, cubic cell (3, 3) Å and types (3n,) (0 = O, 1 = H).

    Oxygens sit on a jittered cubic grid at ``density`` g/cm^3; each molecule has O-H 0.9572 Å
    and H-O-H 104.52 degrees, randomly oriented.
    """
    rng = np.random.default_rng(seed)
    side = (n_molecules * WATER_MASS_G / density * 1e24) ** (1.0 / 3.0)
    per_side = int(np.ceil(n_molecules ** (1.0 / 3.0)))
    grid = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    oxygens = (grid[:n_molecules] + 0.5) * (side / per_side)
    oxygens += rng.normal(0.0, 0.1, oxygens.shape)
    half = np.deg2rad(104.52) / 2.0
    local = 0.9572 * np.array([[np.sin(half), np.cos(half), 0.0],
                               [-np.sin(half), np.cos(half), 0.0]])
    coords, types = [], []
    for o in oxygens:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        coords += [o, *(o + local @ q.T)]
        types += [0, 1, 1]
    return np.asarray(coords), np.eye(3) * side, np.asarray(types)
