"""Model deviation during ASE molecular dynamics.

::

    from polypot.md.ase_devi import ModelDeviObserver
    atoms.calc = DP("graph.000.dp")
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    obs = ModelDeviObserver(atoms, ["graph.000.dp", "graph.001.dp", "graph.002.dp"],
                            "model_devi.out", dyn=dyn)
    dyn.attach(obs, interval=10)
    dyn.run(1000)

Each call evaluates *every* model on the current positions itself (the calculator's own
results are not reused, so the calculator may be anything, e.g. a reference method) and
appends one row to a DeePMD-kit ``model_devi.out`` (same format as ``polypot model-devi``),
flushed at once so the file can be followed during the run. The step is ``dyn.nsteps`` when
``dyn`` is given, else ``calls so far * frequency``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..infer.deep_pot import DeepPot
from ..infer.model_devi import (
    ModelDeviWriter,
    check_type_maps,
    load_models,
    model_devi,
    types_by_name,
)


def _as_models(models: Sequence[str | os.PathLike | DeepPot], backend: str | None
               ) -> list[DeepPot]:
    """DeepPot objects for model files or already loaded DeepPots (type maps checked)."""
    if all(isinstance(m, DeepPot) for m in models):
        loaded = list(models)
        check_type_maps(loaded)
        return loaded  # type: ignore[return-value]
    return load_models([m.path if isinstance(m, DeepPot) else m for m in models], backend)


def frame_inputs(atoms: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Coordinates (1, natoms, 3) Å and cell (1, 3, 3) Å or None (no PBC) of ASE ``atoms``."""
    pbc = atoms.pbc
    if pbc.any() and not pbc.all():
        raise ValueError(
            f"pbc={pbc.tolist()}: Deep Potential models need all three directions periodic "
            "or none")
    cell = atoms.cell.array[None].copy() if pbc.all() else None
    return atoms.positions[None].copy(), cell


class ModelDeviObserver:
    """ASE dynamics observer writing the model deviation of ``atoms`` to ``path``.

    models: two or more model files (or loaded :class:`DeepPot`) sharing a type map; atom
    symbols map onto it by name. dyn: the dynamics (step = ``dyn.nsteps``); without it the
    step is ``calls so far * frequency`` (pass the ``interval`` used in ``dyn.attach``).
    append: add to an existing file instead of overwriting it. ``rows`` keeps every row
    written, (n, 8) as in the file.
    """

    def __init__(self, atoms: Any, models: Sequence[str | os.PathLike | DeepPot],
                 path: str | os.PathLike = "model_devi.out", frequency: int = 1,
                 dyn: Any = None, append: bool = False, backend: str | None = None) -> None:
        self.atoms = atoms
        self.models = _as_models(models, backend)
        self.type_map = self.models[0].get_type_map()
        self.frequency = int(frequency)
        self.dyn = dyn
        self.calls = 0
        self.rows: list[np.ndarray] = []
        self._types: tuple[tuple[str, ...], np.ndarray] | None = None
        self.writer = ModelDeviWriter(path, append=append)

    def step(self) -> int:
        """The MD step of the current call."""
        return int(self.dyn.nsteps) if self.dyn is not None else self.calls * self.frequency

    def __call__(self) -> np.ndarray:
        """Evaluate all models on the current frame, write and return its row (8,)."""
        symbols = tuple(self.atoms.get_chemical_symbols())
        if self._types is None or self._types[0] != symbols:  # once, unless atoms change
            self._types = (symbols, types_by_name(symbols, self.type_map, "atoms"))
        atype = self._types[1]
        coords, cell = frame_inputs(self.atoms)
        row = model_devi(self.models, coords, cell, atype, first_step=self.step())[0]
        self.writer.write(row[:1], row[None, 1:])
        self.rows.append(row)
        self.calls += 1
        return row

    def close(self) -> None:
        """Close the output file."""
        self.writer.close()


def attach_model_devi(dyn: Any, models: Sequence[str | os.PathLike | DeepPot],
                      path: str | os.PathLike = "model_devi.out", interval: int = 1,
                      **kwargs: Any) -> ModelDeviObserver:
    """Create a :class:`ModelDeviObserver` for ``dyn.atoms`` and attach it every ``interval``
    steps; returns the observer."""
    obs = ModelDeviObserver(dyn.atoms, models, path, frequency=interval, dyn=dyn, **kwargs)
    dyn.attach(obs, interval=interval)
    return obs
