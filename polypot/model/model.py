"""The energy model: E = sum of atomic energies, on the extended system (the low-level call).

Derivatives (forces, virials, Hessians) are not written here: they come from one place in
``polypot.model.derivatives`` using a backend's automatic differentiation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .array_api import namespace
from .atomic_model import DPAtomicModel
from .errors import ModelFormatError
from .network import Params


@dataclass(frozen=True)
class EnergyModel:
    """DeePMD-kit's standard energy model (``ener``)."""

    atomic: DPAtomicModel

    # ---- metadata ------------------------------------------------------------------------------
    @property
    def type_map(self) -> list[str]:
        return list(self.atomic.type_map)

    @property
    def rcut(self) -> float:
        return float(self.atomic.rcut)

    @property
    def sel(self) -> list[int] | int:
        return self.atomic.sel

    @property
    def mixed_types(self) -> bool:
        return self.atomic.mixed_types

    @property
    def precision(self) -> str:
        return self.atomic.precision

    @property
    def descriptor_type(self) -> str:
        return getattr(self.atomic.descriptor, "type_name", "se_e2_a")

    @property
    def narrowable(self) -> bool:
        """True if :meth:`narrowed` models exist (se_e2_a, DPA-1)."""
        return bool(getattr(self.atomic.descriptor, "narrowable", False))

    def narrowed(self, widths: tuple[Any, ...]) -> EnergyModel:
        """This model reading neighbour lists with ``widths[t] <= sel[t]`` columns per type
        section (the first columns of each section of the full list, all real neighbours
        among them), with the same results as the full list. Widths may be symbolic."""
        if not self.narrowable:
            raise ValueError(f"{self.descriptor_type}: no narrowed neighbour lists for this "
                             "descriptor (se_e2_a, DPA-1)")
        atomic = dataclasses.replace(self.atomic,
                                     descriptor=self.atomic.descriptor.narrowed(widths))
        return dataclasses.replace(self, atomic=atomic)

    def init(self, rng: np.random.Generator) -> Params:
        return self.atomic.init(rng)

    # ---- forward -------------------------------------------------------------------------------
    def atomic_energy(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any,
                      mapping: Any = None) -> Any:
        """Atomic energies (nf, nloc, 1), eV, of the local atoms. ``mapping`` (nf, nall): the
        local owner of each extended atom, needed by message-passing descriptors (DPA-2)."""
        return self.atomic(p, coord_ext, atype_ext, nlist, mapping)

    def call_lower(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any,
                   mapping: Any = None) -> dict:
        """Energy (nf, 1) and atom_energy (nf, nloc, 1) from the extended system.

        coord_ext (nf, nall, 3) Å; atype_ext (nf, nall) (-1 marks padding atoms);
        nlist (nf, nloc, nnei) padded with -1, in the form ``sel`` asks for.
        """
        xp = namespace(coord_ext)
        ae = self.atomic(p, coord_ext, atype_ext, nlist, mapping)
        return {"atom_energy": ae, "energy": xp.sum(ae, axis=1)}

    # ---- files ---------------------------------------------------------------------------------
    def serialize(self, p: Params) -> dict:
        return self.atomic.serialize(p)

    @classmethod
    def deserialize(cls, data: dict) -> tuple[EnergyModel, Params]:
        if not isinstance(data, dict):
            raise ModelFormatError(f"model must be a dictionary, got {type(data).__name__}")
        fitting = data.get("fitting", {})
        ftype = fitting.get("type", "ener") if isinstance(fitting, dict) else None
        if ftype != "ener":
            raise ModelFormatError(f"only energy models are supported, fitting type is {ftype!r}")
        atomic, p = DPAtomicModel.deserialize(data)
        return cls(atomic), p
