"""Run a reference model on one backend: neighbour data in, NumPy results out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..model.derivatives import derive, hessian
from ..model.model import EnergyModel
from ..neighbor import NeighborData

#: compiled backends see the extended atom count padded up to a multiple of this, so that an MD
#: run (where the number of periodic images drifts) does not recompile at every step
NALL_BUCKET = 128


def pad_extended(nd: NeighborData, multiple: int = NALL_BUCKET) -> NeighborData:
    """The same system with padding atoms (type -1) appended up to a multiple of ``multiple``."""
    nf, nall = nd.atype.shape
    extra = -nall % multiple
    if extra == 0:
        return nd
    return replace(
        nd,
        coord=np.concatenate([nd.coord, np.zeros((nf, extra, 3), nd.coord.dtype)], axis=1),
        atype=np.concatenate([nd.atype, np.full((nf, extra), -1, nd.atype.dtype)], axis=1),
        mapping=np.concatenate([nd.mapping, np.zeros((nf, extra), nd.mapping.dtype)], axis=1),
    )


class ModelRunner:
    """Evaluate an :class:`EnergyModel` with parameters converted once to a backend."""

    def __init__(self, model: EnergyModel, params: Any, backend: Any) -> None:
        self.model = model
        self.backend = backend
        self.params = backend.convert_params(params)
        self._compiled: dict[Any, Any] = {}
        self._compile = getattr(backend, "compile_lower", None)

    def run(self, nd: NeighborData, forces: bool = True, atomic: bool = False) -> dict:
        """energy (nf, 1), atom_energy (nf, nloc, 1) and, with ``forces``, force (nf, nloc, 3),
        virial (nf, 9) [atom_virial (nf, nloc, 9)] as NumPy arrays."""
        b = self.backend
        if self._compile is not None:  # compiled: forces come almost free, energies use it too
            nd = pad_extended(nd)
        coord = b.asarray(nd.coord)
        atype = b.asarray(nd.atype)
        nlist = b.asarray(nd.nlist)
        mapping = b.asarray(nd.mapping)

        def atomic_energy(x: Any) -> Any:
            return self.model.atomic_energy(self.params, x, atype, nlist, mapping)

        if self._compile is not None:
            if atomic not in self._compiled:
                self._compiled[atomic] = self._compile(self.model, self.params, atomic=atomic)
            out = self._compiled[atomic](coord, atype, nlist, mapping)
        elif forces:
            out = derive(b, atomic_energy, coord, mapping, nd.nloc, atomic=atomic)
        else:
            ae = atomic_energy(coord)
            xp = b.namespace()
            out = {"atom_energy": ae, "energy": xp.sum(ae, axis=1)}
        return {k: None if v is None else np.asarray(b.to_numpy(v)) for k, v in out.items()}

    def hessian(self, nd: NeighborData) -> np.ndarray:
        """Hessian (nf, 3 nloc, 3 nloc), eV/Å^2, of the energy in the local coordinates."""
        b = self.backend
        if hasattr(b, "compile_hessian"):
            nd = pad_extended(nd)
        if not hasattr(b, "hessian"):
            raise NotImplementedError(f"the {b.name} backend has no second derivatives")
        atype, nlist = b.asarray(nd.atype), b.asarray(nd.nlist)
        coord, mapping = b.asarray(nd.coord), b.asarray(nd.mapping)

        def atomic_energy(x: Any) -> Any:
            return self.model.atomic_energy(self.params, x, atype, nlist, mapping)

        if hasattr(b, "compile_hessian"):
            if "hessian" not in self._compiled:
                self._compiled["hessian"] = b.compile_hessian(self.model, self.params)
            h = self._compiled["hessian"](coord, atype, nlist, mapping)
        else:
            h = hessian(b, atomic_energy, coord, mapping, nd.nloc)
        return np.asarray(b.to_numpy(h))
