"""Forces, virials and atomic virials, derived in one place from the atomic energies.

F = -dE/dx on the extended atoms, folded back onto their owners through ``mapping``.
Virial W = sum_a F_a (x) x_a (9 components, row-major, [i, j] = F_i x_j; DeePMD-kit's sign).
Atomic virial (DeePMD-kit's convention): W_a[i, j] = -sum_l dE_l/dx_a[i] (x_a[j] - x_l[j]),
which sums to W and does not depend on where the origin is; it is obtained from W's per-atom
terms plus the pullbacks of sum_l x_l[j] E_l (x_l held constant).
The gradients come from the backend's automatic differentiation (a vector-Jacobian product).
"""

from __future__ import annotations

from typing import Any

from .array_api import gather_neighbors, namespace


def derive(backend: Any, atomic_energy_fn: Any, coord_ext: Any, mapping: Any, nloc: int,
           atomic: bool = False, extended: bool = False) -> dict:
    """Energy and its derivatives.

    atomic_energy_fn: coord_ext (nf, nall, 3) -> atomic energies (nf, nloc, 1).
    Returns energy (nf, 1), atom_energy (nf, nloc, 1), force (nf, nloc, 3), virial (nf, 9)
    and, with ``atomic``, atom_virial (nf, nloc, 9); with ``extended`` also extended_force
    (nf, nall, 3), the forces before they are folded through ``mapping``.
    """
    xp = namespace(coord_ext)
    atom_e, pullback = backend.value_and_pullback(atomic_energy_fn, coord_ext)
    force_ext = -pullback(xp.ones_like(atom_e))
    nf, nall, _ = coord_ext.shape
    x = xp.astype(coord_ext, force_ext.dtype)
    av_ext = force_ext[:, :, :, None] * x[:, :, None, :]  # (nf, nall, 3, 3)
    out = {
        "energy": xp.sum(atom_e, axis=1),
        "atom_energy": atom_e,
        "force": backend.scatter_sum(force_ext, mapping, nloc),
        "virial": xp.reshape(xp.sum(av_ext, axis=1), (nf, 9)),
    }
    if extended:
        out["extended_force"] = force_ext
    if atomic:
        x_loc = xp.astype(x[:, :nloc, :], atom_e.dtype)  # cotangents match the output dtype
        corr = xp.stack([pullback(x_loc[:, :, j:j + 1]) for j in range(3)], axis=-1)
        av_ext = xp.reshape(av_ext + corr, (nf, nall, 9))
        out["atom_virial"] = backend.scatter_sum(av_ext, mapping, nloc)
    return out


def hessian(backend: Any, atomic_energy_fn: Any, coord_ext: Any, mapping: Any, nloc: int
            ) -> Any:
    """Hessian d2E / dx dx of the local coordinates, (nf, 3 nloc, 3 nloc) in eV/Å^2.

    Periodic images move rigidly with the atom they copy, so the Hessian is that of the periodic
    system (the cell is held fixed). Uses ``backend.hessian``: second-order autodiff.
    """
    xp = namespace(coord_ext)
    x_loc = coord_ext[:, :nloc, :]
    owners = gather_neighbors(xp, x_loc, mapping[:, :, None])[:, :, 0, :]
    shift = coord_ext - owners  # constant image offsets (zero for local atoms)

    def energy_of_local(xl: Any) -> Any:
        ext = gather_neighbors(xp, xl, mapping[:, :, None])[:, :, 0, :] + shift
        return xp.sum(atomic_energy_fn(ext), axis=(1, 2))

    return backend.hessian(energy_of_local, x_loc)
