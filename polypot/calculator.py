"""ASE calculator: ``polypot.calculator.DP(model)`` runs any model file in ASE.

Like DeePMD-kit's ``deepmd.calculator.DP``: energy, free_energy, forces, stress (periodic
cells) and per-atom energies. Atom symbols map to the model's ``type_map`` by name (or through
``type_dict``); the neighbour list is polypot's (vesin), not ASE's.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .infer.deep_pot import DeepPot

#: default Verlet skin (Å) of the calculator's neighbour list
DEFAULT_SKIN = 1.0


class UnknownElementError(ValueError):
    """An atom's element is not in the model's type map."""


class DP(Calculator):
    """Deep Potential calculator for ASE.

    model: a model file of any suffix (``.dp``, ``.pth``, ``.hlo``, ...) or a loaded
    :class:`~polypot.DeepPot`. type_dict: element -> type index (default: the model's
    ``type_map``). backend: for ``.dp`` / ``.yaml`` files, which backend evaluates them.
    skin: Verlet skin (Å) of the neighbour list, reused between steps until an atom has moved
    more than skin / 2 (results equal a fresh list's); None builds a fresh list every step. A
    :class:`~polypot.DeepPot` passed as ``model`` is set to this skin.
    Units: eV, eV/Å and, for stress, eV/Å^3 with ASE's sign (dE/dstrain / V = -virial / V).
    """

    implemented_properties: ClassVar[list[str]] = [
        "energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model: str | os.PathLike | DeepPot, label: str = "DP",
                 type_dict: dict[str, int] | None = None, backend: str | None = None,
                 skin: float | None = DEFAULT_SKIN, **kwargs: Any) -> None:
        super().__init__(label=label, **kwargs)
        self.dp = model if isinstance(model, DeepPot) else DeepPot(model, backend=backend)
        self.dp.set_skin(skin)
        type_map = self.dp.get_type_map()
        self.type_dict = dict(type_dict) if type_dict is not None else {
            name: i for i, name in enumerate(type_map)}
        bad = {k: v for k, v in self.type_dict.items()
               if not isinstance(v, int | np.integer) or not 0 <= v < len(type_map)}
        if bad:
            raise ValueError(f"type_dict {bad} points outside the model's type_map {type_map}")
        self._types_for: tuple[tuple[str, ...], np.ndarray] | None = None

    def atom_types(self, symbols: list[str]) -> np.ndarray:
        """Model type index of each symbol; a clear error for an element the model lacks."""
        key = tuple(symbols)
        if self._types_for is None or self._types_for[0] != key:
            missing = sorted(set(key) - set(self.type_dict))
            if missing:
                raise UnknownElementError(
                    f"element(s) {', '.join(missing)} not in the model's type map "
                    f"{self.dp.get_type_map()} ({self.dp.path}); pass type_dict= to map them"
                )
            self._types_for = (key, np.array([self.type_dict[s] for s in key], dtype=np.int64))
        return self._types_for[1]

    def calculate(self, atoms: Any = None, properties: Any = ("energy", "forces"),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        atype = self.atom_types(atoms.get_chemical_symbols())
        periodic = atoms.pbc
        if periodic.any() and not periodic.all():
            raise ValueError(
                f"pbc={periodic.tolist()}: Deep Potential models need all three directions "
                "periodic or none")
        cell = atoms.cell.array[None] if periodic.all() else None
        coord = atoms.positions[None]
        if "stress" in properties and cell is None:
            raise PropertyNotImplementedError("stress needs a periodic cell (atoms.pbc all True)")
        atomic = "energies" in properties
        out = self.dp.eval(coord, cell, atype, atomic=atomic)
        energy = float(out[0][0, 0])
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out[1][0].copy()
        if cell is not None:
            virial = out[2][0].reshape(3, 3)
            stress = -0.5 * (virial + virial.T) / atoms.get_volume()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if atomic:
            self.results["energies"] = out[3][0, :, 0].copy()
