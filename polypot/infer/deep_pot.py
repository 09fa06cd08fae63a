"""``DeepPot``: evaluate a model file of any supported suffix, like DeePMD-kit's ``DeepPot``.

Neutral files (``.dp``, ``.yaml``) are deserialised into the reference model and run on a
backend; frozen files (``.pth``, ``.hlo``, ``.savedmodel``, ``.json``) run their compiled program
without importing ``polypot.model``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..backend.registry import (
    backend_for_file,
    canonical_name,
    default_autodiff_backend,
    get_backend,
    load_frozen,
)
from ..neighbor import NeighborData, build_neighbor_data
from ..neighbor.verlet import VerletNeighbors
from .inputs import prepare_inputs


class _FrozenRunner:
    """Adapter giving a frozen program the runner interface."""

    def __init__(self, frozen: Any) -> None:
        self.frozen = frozen

    def run(self, nd: NeighborData, forces: bool = True, atomic: bool = False) -> dict:
        return self.frozen.run(nd.coord, nd.atype, nd.nlist, nd.mapping, atomic=atomic)


#: descriptor types whose atoms pass messages (features) to their neighbours between layers
MESSAGE_PASSING = ("dpa2",)


class DeepPot:
    """A potential loaded from ``model_file``.

    ``.dp`` / ``.yaml`` run on ``backend`` (default: the first installed autodiff backend of
    torch, jax, tensorflow, paddle; NumPy when none is installed, which gives energies only).
    Frozen files run on the backend their suffix names; ``backend`` must then be None or that one.

    skin (Å): when set, single-frame evaluations reuse the neighbour list between calls
    (:class:`~polypot.neighbor.verlet.VerletNeighbors`) until an atom has moved more than
    ``skin / 2`` or the cell, types or atom count change: for MD, where consecutive frames are
    close. The results equal those of a fresh list (same neighbours, same order). None: build
    a fresh list at every call, as DeePMD-kit does.

    wrap: move the atoms of periodic frames into the cell by whole cell vectors before the
    neighbour list (default; DeePMD-kit 3.2's ``DeepPot`` does the same with its own
    neighbour list). Energies, forces and virials never depend on it, nor do atomic virials of
    atom-local models. DPA-2's atomic virials do: they pair gradients reaching an atom through
    its local copy with that copy's position. Wrapped, they do not depend on which image of an
    atom the caller passes, and an MD run keeps its extended system (and compiled shapes) the
    same size as atoms drift out of the cell. ``wrap=False`` keeps the atoms where they are
    given: DPA-2 atomic virials then equal those of DeePMD-kit 3.2 run with the ``vesin``
    package installed (its vesin neighbour list does not move atoms), as in the DeePMD-kit
    fixtures.
    """

    def __init__(self, model_file: str | os.PathLike, backend: str | None = None,
                 skin: float | None = None, wrap: bool = True) -> None:
        self.path = Path(model_file)
        self.wrap = bool(wrap)
        file_backend = backend_for_file(self.path)
        if file_backend == "numpy":
            from ..io.model_file import load_model
            from .runner import ModelRunner

            model, params, self.metadata = load_model(self.path)
            self.backend_name = backend or default_autodiff_backend() or "numpy"
            self._runner: Any = ModelRunner(model, params, get_backend(self.backend_name))
            sel = model.sel
            self._info = {"type_map": model.type_map, "rcut": model.rcut, "sel": sel,
                          "descriptor": model.descriptor_type}
        else:
            if backend is not None and canonical_name(backend) != file_backend:
                raise ValueError(
                    f"{self.path} is a frozen {file_backend} file; it cannot run on {backend!r} "
                    f"(convert it first: polypot convert-backend {self.path} OUT)"
                )
            frozen = load_frozen(self.path)
            self.metadata = dict(frozen.metadata)
            self.backend_name = file_backend
            self._runner = _FrozenRunner(frozen)
            self._info = {k: self.metadata[k] for k in ("type_map", "rcut", "sel")}
            self._info["descriptor"] = self.metadata.get("descriptor", "")
        self._has_forces = self.backend_name != "numpy"
        self.set_skin(skin)

    def set_skin(self, skin: float | None) -> None:
        """Reuse single-frame neighbour lists with this Verlet skin (Å); None: never reuse."""
        self._verlet = None if skin is None else VerletNeighbors(
            self.get_rcut(), self._info["sel"], skin, wrap=self.wrap)

    # ---- metadata (DeePMD-kit names) -------------------------------------------------------------
    def get_type_map(self) -> list[str]:
        return list(self._info["type_map"])

    def get_ntypes(self) -> int:
        return len(self._info["type_map"])

    def get_rcut(self) -> float:
        return float(self._info["rcut"])

    def get_sel(self) -> list[int]:
        sel = self._info["sel"]
        return [sel] if isinstance(sel, int) else list(sel)

    def has_message_passing(self) -> bool:
        """Whether atoms exchange features between layers (DPA-2): a domain's ghost atoms then
        need the features of atoms owned by other domains, not only their positions."""
        return str(self._info.get("descriptor", "")) in MESSAGE_PASSING

    def get_dim_fparam(self) -> int:
        return 0

    def get_dim_aparam(self) -> int:
        return 0

    # ---- evaluation ------------------------------------------------------------------------------
    def neighbor_data(self, coords: Any, cells: Any, atom_types: Any) -> NeighborData:
        """Checked inputs -> extended system and neighbour list for this model."""
        coord, cell, atype = prepare_inputs(coords, cells, atom_types, self.get_type_map())
        if self._verlet is not None and coord.shape[0] == 1:
            return self._verlet(coord, cell, atype)
        return build_neighbor_data(coord, cell, atype, self.get_rcut(), self._info["sel"],
                                   wrap=self.wrap)

    def eval(self, coords: Any, cells: Any, atom_types: Any, atomic: bool = False
             ) -> tuple[np.ndarray, ...]:
        """Energy (nf, 1), force (nf, natoms, 3), virial (nf, 9) [, atom_energy (nf, natoms, 1),
        atom_virial (nf, natoms, 9)] in eV, eV/Å, eV. Coordinates in Å; cells rows are vectors.
        Atoms of periodic frames are moved into the cell by whole cell vectors before the
        neighbour list is built, unless ``wrap=False`` (see the class)."""
        nd = self.neighbor_data(coords, cells, atom_types)
        out = self._runner.run(nd, forces=True, atomic=atomic)
        res = (out["energy"], out["force"], out["virial"])
        if atomic:
            res = (*res, out["atom_energy"], out["atom_virial"])
        return res

    def eval_energy(self, coords: Any, cells: Any, atom_types: Any
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Energy (nf, 1) and atomic energies (nf, natoms, 1) only; works on every backend."""
        nd = self.neighbor_data(coords, cells, atom_types)
        out = self._runner.run(nd, forces=False)
        return out["energy"], out["atom_energy"]

    def eval_hessian(self, coords: Any, cells: Any, atom_types: Any) -> np.ndarray:
        """Hessian d2E/dx2 (nf, 3 natoms, 3 natoms) in eV/Å^2 (cell fixed; neutral files on an
        autodiff backend)."""
        if not hasattr(self._runner, "hessian"):
            raise NotImplementedError(
                f"{self.path}: Hessians are computed from .dp/.yaml files on an autodiff "
                "backend; frozen files hold energy, force and virial programs only"
            )
        return self._runner.hessian(self.neighbor_data(coords, cells, atom_types))
