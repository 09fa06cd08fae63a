"""``DeepPot``: evaluate a model file (any supported suffix) like DeePMD-kit's ``DeepPot``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..backend.registry import backend_for_file, default_autodiff_backend, get_backend
from ..io.model_file import load_model
from ..model.errors import ModelFormatError
from ..neighbor import build_neighbor_data
from .inputs import prepare_inputs
from .runner import ModelRunner


class DeepPot:
    """A potential loaded from ``model_file``.

    ``.dp`` / ``.yaml`` run on ``backend`` (default: the first installed autodiff backend of
    torch, jax, tensorflow, paddle; NumPy when none is installed, which gives energies only).
    """

    def __init__(self, model_file: str | os.PathLike, backend: str | None = None) -> None:
        self.path = Path(model_file)
        file_backend = backend_for_file(self.path)
        if file_backend != "numpy":
            raise ModelFormatError(
                f"{self.path}: frozen {file_backend} files are not supported by this version; "
                "use a .dp or .yaml model"
            )
        self.model, params, self.metadata = load_model(self.path)
        name = backend or default_autodiff_backend() or "numpy"
        self.backend_name = name
        self._runner = ModelRunner(self.model, params, get_backend(name))

    # ---- metadata (DeePMD-kit names) -------------------------------------------------------------
    def get_type_map(self) -> list[str]:
        return self.model.type_map

    def get_ntypes(self) -> int:
        return len(self.model.type_map)

    def get_rcut(self) -> float:
        return self.model.rcut

    def get_sel(self) -> list[int]:
        sel = self.model.sel
        return [sel] if isinstance(sel, int) else list(sel)

    def get_dim_fparam(self) -> int:
        return 0

    def get_dim_aparam(self) -> int:
        return 0

    # ---- evaluation ------------------------------------------------------------------------------
    def _neighbors(self, coords: Any, cells: Any, atom_types: Any) -> Any:
        coord, cell, atype = prepare_inputs(coords, cells, atom_types, self.model.type_map)
        return build_neighbor_data(coord, cell, atype, self.model.rcut, self.model.sel)

    def eval(self, coords: Any, cells: Any, atom_types: Any, atomic: bool = False
             ) -> tuple[np.ndarray, ...]:
        """Energy (nf, 1), force (nf, natoms, 3), virial (nf, 9) [, atom_energy (nf, natoms, 1),
        atom_virial (nf, natoms, 9)] in eV, eV/Å, eV. Coordinates in Å; cells rows are vectors."""
        nd = self._neighbors(coords, cells, atom_types)
        out = self._runner.run(nd, forces=True, atomic=atomic)
        res = (out["energy"], out["force"], out["virial"])
        if atomic:
            res = (*res, out["atom_energy"], out["atom_virial"])
        return res

    def eval_energy(self, coords: Any, cells: Any, atom_types: Any
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Energy (nf, 1) and atomic energies (nf, natoms, 1) only; works on every backend."""
        nd = self._neighbors(coords, cells, atom_types)
        out = self._runner.run(nd, forces=False)
        return out["energy"], out["atom_energy"]
