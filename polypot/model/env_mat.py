"""DeePMD environment matrix with the smooth switching function and davg/dstd normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .array_api import gather_neighbors, gather_types, namespace


def smooth_weight(xp: Any, r: Any, rmin: float, rmax: float) -> Any:
    """Quintic switch s(r): 1 below ``rmin``, 0 above ``rmax``, C2 at both ends."""
    r = xp.clip(r, rmin, rmax)
    u = (r - rmin) / (rmax - rmin)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


@dataclass(frozen=True)
class EnvMat:
    """Environment matrix rows ``s(r) [1/r, x/r^2, y/r^2, z/r^2]`` (Å^-1) for each neighbour."""

    rcut: float
    rcut_smth: float
    protection: float = 0.0
    radial_only: bool = False

    def raw(self, coord_ext: Any, nlist: Any) -> tuple[Any, Any, Any]:
        """Un-normalised rows.

        coord_ext (nf, nall, 3), nlist (nf, nloc, nnei). Returns env (nf, nloc, nnei, 4 or 1),
        switch sw (nf, nloc, nnei, 1) (0 on empty slots), and the slot mask (nf, nloc, nnei).
        """
        xp = namespace(coord_ext)
        nloc = nlist.shape[1]
        mask = nlist >= 0
        safe = xp.where(mask, nlist, xp.zeros_like(nlist))
        neigh = gather_neighbors(xp, coord_ext, safe)
        diff = neigh - coord_ext[:, :nloc, None, :]
        maskf = xp.astype(mask, coord_ext.dtype)[..., None]
        # empty slots get a harmless unit vector so that |diff| and its gradient stay finite
        diff = diff * maskf + (1.0 - maskf) * xp.asarray([1.0, 0.0, 0.0], dtype=coord_ext.dtype)
        length = xp.sqrt(xp.sum(diff * diff, axis=-1, keepdims=True))
        sw = smooth_weight(xp, length, self.rcut_smth, self.rcut) * maskf
        t0 = 1.0 / (length + self.protection)
        if self.radial_only:
            env = t0 * sw
        else:
            t1 = diff / (length + self.protection) ** 2
            env = xp.concat([t0, t1], axis=-1) * sw
        return env, sw, mask

    def __call__(
        self, coord_ext: Any, atype_loc: Any, nlist: Any, davg: Any, dstd: Any
    ) -> tuple[Any, Any, Any]:
        """Normalised rows ``(env - davg[t_i]) / dstd[t_i]``; empty slots stay ``-davg/dstd``.

        davg, dstd: (ntypes, nnei, 4). Returns (env, sw, mask) as :meth:`raw`.
        """
        xp = namespace(coord_ext)
        env, sw, mask = self.raw(coord_ext, nlist)
        nf, nloc, nnei, nc = env.shape
        flat = xp.reshape(atype_loc, (nf * nloc,))
        avg = xp.reshape(xp.take(davg[..., :nc], flat, axis=0), (nf, nloc, nnei, nc))
        std = xp.reshape(xp.take(dstd[..., :nc], flat, axis=0), (nf, nloc, nnei, nc))
        return (env - avg) / std, sw, mask

    def serialize(self) -> dict:
        return {
            "rcut": self.rcut,
            "rcut_smth": self.rcut_smth,
            "protection": self.protection,
            "use_exp_switch": False,
        }


def pair_exclude_mask(xp: Any, ntypes: int, exclude_types: Any, atype_ext: Any,
                      nlist: Any) -> Any:
    """Boolean (nf, nloc, nnei): False where the pair (t_i, t_j) is in ``exclude_types``.

    Empty slots count as a virtual type ``ntypes`` that is never excluded.
    """
    nloc = nlist.shape[1]
    if not exclude_types:
        return xp.ones(nlist.shape, dtype=xp.bool)
    table = [[True] * (ntypes + 1) for _ in range(ntypes + 1)]
    for a, b in exclude_types:
        table[a][b] = False
        table[b][a] = False
    flat_table = xp.asarray([v for row in table for v in row], dtype=xp.bool)
    mask = nlist >= 0
    tj = gather_types(xp, atype_ext, xp.where(mask, nlist, xp.zeros_like(nlist)))
    tj = xp.where(mask, tj, xp.full_like(tj, ntypes))
    ti = atype_ext[:, :nloc, None]
    idx = ti * (ntypes + 1) + tj
    return xp.reshape(xp.take(flat_table, xp.reshape(idx, (-1,)), axis=0), nlist.shape)
