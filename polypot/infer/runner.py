"""Run a reference model on one backend: neighbour data in, NumPy results out."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.derivatives import derive
from ..model.model import EnergyModel
from ..neighbor import NeighborData


class ModelRunner:
    """Evaluate an :class:`EnergyModel` with parameters converted once to a backend."""

    def __init__(self, model: EnergyModel, params: Any, backend: Any) -> None:
        self.model = model
        self.backend = backend
        self.params = backend.convert_params(params)
        self._compiled: dict[bool, Any] = {}
        self._compile = getattr(backend, "compile_lower", None)

    def run(self, nd: NeighborData, forces: bool = True, atomic: bool = False) -> dict:
        """energy (nf, 1), atom_energy (nf, nloc, 1) and, with ``forces``, force (nf, nloc, 3),
        virial (nf, 9) [atom_virial (nf, nloc, 9)] as NumPy arrays."""
        b = self.backend
        coord = b.asarray(nd.coord)
        atype = b.asarray(nd.atype)
        nlist = b.asarray(nd.nlist)

        def atomic_energy(x: Any) -> Any:
            return self.model.atomic_energy(self.params, x, atype, nlist)

        if forces and self._compile is not None:
            if atomic not in self._compiled:
                self._compiled[atomic] = self._compile(self.model, self.params, atomic=atomic)
            out = self._compiled[atomic](coord, atype, nlist, b.asarray(nd.mapping))
        elif forces:
            out = derive(b, atomic_energy, coord, b.asarray(nd.mapping), nd.nloc, atomic=atomic)
        else:
            ae = atomic_energy(coord)
            xp = b.namespace()
            out = {"atom_energy": ae, "energy": xp.sum(ae, axis=1)}
        return {k: None if v is None else np.asarray(b.to_numpy(v)) for k, v in out.items()}
