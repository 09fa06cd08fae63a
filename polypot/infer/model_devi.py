"""Model deviation for active learning, with DeePMD-kit v3's definitions and file format.

Given the predictions of several models on the same frames (``nm`` models, ``nf`` frames,
``natoms`` atoms):

* force: ``devi_f[i] = |std_models(F_i)|`` (population std of each Cartesian component over
  the models, then the Euclidean norm over xyz); ``max/min/avg_devi_f`` are the max, min and
  mean of ``devi_f`` over the atoms of a frame (eV/Å);
* virial: the virials are divided by ``natoms`` first; ``devi_v = std_models(W / natoms)`` per
  component (9 of them); ``max/min_devi_v`` are its max and min over the 9 components and
  ``avg_devi_v = |devi_v| / 3`` (Frobenius norm over 3) (eV per atom);
* energy: ``devi_e = std_models(E / natoms)`` (eV per atom).

This matches ``calc_model_devi_f``, ``calc_model_devi_v``, ``calc_model_devi_e`` and
``calc_model_devi`` (which divides energy and virial by the atom count) of DeePMD-kit v3's
``deepmd/infer/model_devi.py``; the output file matches its ``write_model_devi_out``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Column names after ``step``, in file order.
COLUMNS = ("max_devi_v", "min_devi_v", "avg_devi_v",
           "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e")
STEP_FORMAT = "%12d"
VALUE_FORMAT = "%19.6e"


def force_deviation(forces: np.ndarray) -> np.ndarray:
    """Per-atom force deviation (nf, natoms) in eV/Å from forces (nm, nf, natoms, 3) eV/Å."""
    return np.linalg.norm(np.std(forces, axis=0), axis=-1)


def virial_deviation(virials_per_atom: np.ndarray) -> np.ndarray:
    """Per-component deviation (nf, 9) from virials per atom (nm, nf, 9) in eV."""
    return np.std(virials_per_atom, axis=0)


def energy_deviation(energies_per_atom: np.ndarray) -> np.ndarray:
    """Deviation (nf,) from energies per atom (nm, nf, 1) in eV."""
    return np.std(energies_per_atom, axis=0).reshape(-1)


def deviation(forces: Any, virials: Any, energies: Any = None) -> np.ndarray:
    """Model deviation columns of each frame.

    forces (nm, nf, natoms, 3) eV/Å, virials (nm, nf, 9) eV (total, not per atom), energies
    (nm, nf, 1) eV (total) or None -> (nf, 7) or, with energies, (nf, 8): max_devi_v,
    min_devi_v, avg_devi_v (eV/atom), max_devi_f, min_devi_f, avg_devi_f (eV/Å)[, devi_e
    (eV/atom)]. Needs at least two models for a non-zero result.
    """
    f = np.asarray(forces, dtype=np.float64)
    v = np.asarray(virials, dtype=np.float64)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ValueError(f"forces must be (nmodels, nframes, natoms, 3), got {f.shape}")
    nm, nf, natoms = f.shape[:3]
    if v.size != nm * nf * 9:
        raise ValueError(f"virials must be ({nm}, {nf}, 9), got {v.shape}")
    v = v.reshape(nm, nf, 9)
    devi_v = virial_deviation(v / natoms)
    devi_f = force_deviation(f)
    cols = [devi_v.max(axis=-1), devi_v.min(axis=-1), np.linalg.norm(devi_v, axis=-1) / 3,
            devi_f.max(axis=-1), devi_f.min(axis=-1), devi_f.mean(axis=-1)]
    if energies is not None:
        e = np.asarray(energies, dtype=np.float64)
        if e.size != nm * nf:
            raise ValueError(f"energies must be ({nm}, {nf}, 1), got {e.shape}")
        cols.append(energy_deviation(e.reshape(nm, nf, 1) / natoms))
    return np.stack(cols, axis=-1)


def header_line(ncols: int = 7) -> str:
    """DeePMD-kit's column header (without the leading ``# ``) for ``ncols`` value columns."""
    if ncols not in (6, 7):
        raise ValueError(f"model deviation has 6 or 7 value columns, got {ncols}")
    return f"{'step':>10}" + "".join(f"{name:>19}" for name in COLUMNS[:ncols])


def format_rows(steps: Any, rows: Any) -> str:
    """Lines ``%12d`` + ``%19.6e`` per value for steps (n,) and rows (n, ncols)."""
    steps = np.asarray(steps).reshape(-1)
    rows = np.asarray(rows, dtype=np.float64).reshape(len(steps), -1)
    out = []
    for step, row in zip(steps, rows, strict=True):
        out.append(STEP_FORMAT % int(step) + "".join(VALUE_FORMAT % x for x in row) + "\n")
    return "".join(out)


class ModelDeviWriter:
    """Writes ``model_devi.out`` in DeePMD-kit's format, flushing after each ``write``.

    The header is written before the first rows: a ``# {title}`` line (DeePMD-kit's Python
    writer puts the system path there; empty by default; ``title=None`` leaves the line out,
    as LAMMPS' pair_style deepmd does) then ``#       step         max_devi_v ...``. With
    ``append=True`` rows are appended to an existing non-empty file without a new header.
    Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False,
                 title: str | None = "") -> None:
        self.path = Path(path)
        self.title = title
        has_content = append and self.path.exists() and self.path.stat().st_size > 0
        self._fp: IO[str] | None = open(self.path, "a" if append else "w")  # noqa: SIM115
        self._header_written = has_content

    def write_header(self, ncols: int = 7) -> None:
        """Write ``# {title}`` and the column header line for ``ncols`` value columns."""
        fp = self._file()
        title = "" if self.title is None else f"# {self.title}\n"
        fp.write(f"{title}# {header_line(ncols)}\n")
        self._header_written = True
        fp.flush()

    def write(self, steps: Any, rows: Any) -> None:
        """Append rows (n, 6 or 7) at steps (n,) and flush."""
        rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if not self._header_written:
            self.write_header(rows.shape[-1])
        fp = self._file()
        fp.write(format_rows(steps, rows))
        fp.flush()

    def _file(self) -> IO[str]:
        if self._fp is None:
            raise ValueError(f"{self.path}: writer is closed")
        return self._fp

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None

    def __enter__(self) -> ModelDeviWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_model_devi_out(devi: Any, path: str | os.PathLike, title: str = "",
                         append: bool = False) -> None:
    """Write ``devi`` (nf, 1 + ncols; first column the step) with DeePMD-kit's format."""
    devi = np.atleast_2d(np.asarray(devi, dtype=np.float64))
    with ModelDeviWriter(path, append=append, title=title) as writer:
        if append:  # DeePMD-kit writes one header per call, also when appending
            writer.write_header(devi.shape[1] - 1)
        writer.write(devi[:, 0], devi[:, 1:])


# ---- evaluating models ---------------------------------------------------------------------------
def load_models(paths: Sequence[str | os.PathLike], backend: str | None = None) -> list:
    """DeepPot of each path (DeepPot names a missing file); ValueError for differing type
    maps."""
    from .deep_pot import DeepPot

    models = [DeepPot(p, backend=backend) for p in paths]
    check_type_maps(models)
    return models


def check_type_maps(models: Sequence[Any]) -> list[str]:
    """The common type map of ``models``; ValueError naming the files when they differ."""
    if len(models) < 2:
        raise ValueError(f"model deviation needs at least two models, got {len(models)}")
    ref = models[0].get_type_map()
    for m in models[1:]:
        if m.get_type_map() != ref:
            raise ValueError(
                "the models do not share a type map: "
                f"{getattr(models[0], 'path', 'model 0')} has {ref}, "
                f"{getattr(m, 'path', 'a model')} has {m.get_type_map()}"
            )
    return list(ref)


def types_by_name(symbols: Sequence[str], type_map: Sequence[str], source: str = "the input"
                  ) -> np.ndarray:
    """Type index (natoms,) of each element symbol in ``type_map``; ValueError naming the
    elements the type map lacks."""
    index = {name: i for i, name in enumerate(type_map)}
    missing = sorted(set(symbols) - set(index))
    if missing:
        raise ValueError(
            f"{source}: element(s) {', '.join(missing)} not in the models' type map "
            f"{list(type_map)}"
        )
    return np.array([index[s] for s in symbols], dtype=np.int64)


def evaluate(models: Sequence[Any], coords: Any, cells: Any, atype: Any
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies (nm, nf, 1) eV, forces (nm, nf, natoms, 3) eV/Å, virials (nm, nf, 9) eV.

    coords (nf, natoms, 3) or (nf, 3 natoms) Å, cells (nf, 3, 3) / (nf, 9) Å or None (no PBC),
    atype (natoms,) indices into the models' type map.
    """
    outs = [m.eval(coords, cells, atype)[:3] for m in models]
    energies = np.stack([np.asarray(o[0]).reshape(-1, 1) for o in outs])
    nf = energies.shape[1]
    forces = np.stack([np.asarray(o[1]).reshape(nf, -1, 3) for o in outs])
    virials = np.stack([np.asarray(o[2]).reshape(nf, 9) for o in outs])
    return energies, forces, virials


def model_devi(models: Sequence[Any], coords: Any, cells: Any, atype: Any,
               frequency: int = 1, first_step: int = 0, batch_size: int = 64) -> np.ndarray:
    """Model deviation of each frame: (nf, 8) with columns step, max_devi_v, min_devi_v,
    avg_devi_v, max_devi_f, min_devi_f, avg_devi_f, devi_e (DeePMD-kit's ``calc_model_devi``).

    models: DeepPot objects sharing a type map; coords (nf, natoms, 3) Å; cells (nf, 3, 3) Å
    or None (open boundaries); atype (natoms,) indices into the type map. Frames are evaluated
    ``batch_size`` at a time; step = first_step + frame index * frequency.
    """
    check_type_maps(models)
    coords = np.asarray(coords, dtype=np.float64)
    nf = coords.shape[0]
    cells = None if cells is None else np.asarray(cells, dtype=np.float64).reshape(nf, 3, 3)
    chunks = []
    for start in range(0, nf, max(1, batch_size)):
        part = slice(start, start + max(1, batch_size))
        energies, forces, virials = evaluate(
            models, coords[part], None if cells is None else cells[part], atype)
        chunks.append(deviation(forces, virials, energies))
    cols = np.concatenate(chunks) if chunks else np.zeros((0, 7))
    steps = first_step + np.arange(nf) * frequency
    return np.concatenate([steps[:, None].astype(np.float64), cols], axis=1)
