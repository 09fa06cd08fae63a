"""``polypot model-devi -m M1 M2 ... -s SYSTEM -o model_devi.out -f FREQ`` (``dp model-devi``).

SYSTEM is a DeePMD-kit npy/hdf5 system (or a folder / HDF5 file holding several) or a
trajectory file: i-PI xyz (``# CELL(abcABC): ...`` comments, units from its ``{unit}`` tags)
or anything ``ase.io.read`` reads (extxyz, LAMMPS dump, ASE .traj, ...). Element symbols map
onto the models' type map by name. The output file is overwritten; each system gets a
``# SYSTEM`` line, the column header and one row per frame; step = frame index * FREQ.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.system import find_systems, load_system
from ..infer.model_devi import ModelDeviWriter, load_models, model_devi, types_by_name

if TYPE_CHECKING:
    from ase import Atoms


def _is_system(path: str) -> bool:
    """True if ``path`` names DeePMD data (a folder, ``file.h5[#/group]``), not a trajectory."""
    if os.path.isdir(path) or "#" in path:
        return True
    if path.lower().endswith((".h5", ".hdf5", ".hdf")):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


_IPI_CELL = re.compile(r"CELL[(\[{](abcABC|H|GENH)[)\]}]:\s*([-+0-9.Ee\s]*)")
_IPI_UNIT = re.compile(r"(\w+)\{(\w*)\}")
#: Å per unit of the i-PI length units (i-PI's own bohr: 1 Å = 1.8897261 bohr)
_IPI_LENGTH = {"": 1 / 1.8897261, "automatic": 1 / 1.8897261, "atomic_unit": 1 / 1.8897261,
               "angstrom": 1.0, "nanometer": 10.0, "picometer": 0.01, "meter": 1e10}


def _ipi_length(unit: str, path: str) -> float:
    if unit not in _IPI_LENGTH:
        raise ValueError(f"{path}: i-PI length unit {unit!r} not supported "
                         f"(use one of {sorted(k for k in _IPI_LENGTH if k)})")
    return _IPI_LENGTH[unit]


def _ipi_frame(comment: str, body: list[str], path: str) -> Atoms:
    """One i-PI xyz frame: cell from ``CELL(abcABC)`` / ``CELL(H)``, units from the
    ``positions{unit}  cell{unit}`` tags (default atomic units, as i-PI)."""
    from ase import Atoms
    from ase.geometry import cellpar_to_cell

    match = _IPI_CELL.search(comment)
    assert match is not None
    kind, numbers = match.group(1), [float(x) for x in match.group(2).split()]
    units = dict(_IPI_UNIT.findall(comment))
    what = [k for k in units if k != "cell"]
    if what and what[0] not in ("positions", "x_centroid"):
        raise ValueError(f"{path}: an i-PI trajectory of {what[0]}, not of positions")
    to_a = _ipi_length(units.get(what[0], "") if what else "", path)
    cell_a = _ipi_length(units.get("cell", ""), path)
    if kind == "abcABC":
        cell = cellpar_to_cell(numbers[:6]) * cell_a
    elif kind == "H":  # i-PI's h holds the lattice vectors as columns
        cell = np.array(numbers[:9]).reshape(3, 3).T * cell_a
    else:
        raise ValueError(f"{path}: i-PI CELL(GENH) frames are not supported; write "
                         "CELL(abcABC) (i-PI's default) or extxyz")
    rows = [line.split() for line in body]
    symbols = [r[0] for r in rows]
    positions = np.array([[float(x) for x in r[1:4]] for r in rows]) * to_a
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def read_ipi_xyz(path: str) -> list[Atoms] | None:
    """Frames of an i-PI xyz trajectory (``# CELL(abcABC): ...`` comment lines), or None if
    ``path`` is not one. ASE's xyz reader would drop the cell and the units of these files."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = [fh.readline() for _ in range(2)]
        if not head[0].strip().isdigit() or not _IPI_CELL.search(head[1]):
            return None
        fh.seek(0)
        lines = fh.read().splitlines()
    frames, i = [], 0
    while i < len(lines) and lines[i].strip():
        natoms = int(lines[i])
        body = lines[i + 2:i + 2 + natoms]
        if len(body) != natoms:
            raise ValueError(f"{path}: frame {len(frames)} is truncated")
        frames.append(_ipi_frame(lines[i + 1], body, path))
        i += 2 + natoms
    return frames


def _read_frames(path: str, type_names: list[str]) -> list[Atoms]:
    """All frames of a trajectory file; LAMMPS dump types i map to ``type_names[i - 1]``
    unless the dump has an ``element`` column."""
    from ase.io import read
    from ase.io.formats import filetype

    if not os.path.exists(path):
        raise FileNotFoundError(f"trajectory {path} does not exist")
    frames = read_ipi_xyz(path)
    if frames is not None:
        return frames
    try:
        fmt = filetype(path, read=True)
        kwargs = {"specorder": type_names} if fmt.startswith("lammps-dump") else {}
        frames = read(path, index=":", **kwargs)
    except IndexError as err:
        raise ValueError(f"{path}: a LAMMPS atom type beyond the type names {type_names} "
                         "(give them with --type-names)") from err
    except Exception as err:  # ASE raises many kinds for unreadable files
        raise ValueError(f"cannot read {path} as a trajectory with ase.io.read: {err}") from err
    return frames if isinstance(frames, list) else [frames]


def read_trajectory(path: str, type_map: list[str], type_names: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Coordinates (nf, natoms, 3) Å, cells (nf, 3, 3) Å or None, types (natoms,) of a
    trajectory file; symbols are mapped onto ``type_map`` by name. type_names: element of
    each LAMMPS atom type (1, 2, ...) for dumps without an element column (default
    ``type_map``, as pair_style deepmd)."""
    frames = _read_frames(path, list(type_names or type_map))
    if not frames:
        raise ValueError(f"{path}: no frames")
    symbols = frames[0].get_chemical_symbols()
    for i, atoms in enumerate(frames):
        if atoms.get_chemical_symbols() != symbols:
            raise ValueError(
                f"{path}: frame {i} has different atoms than frame 0; model deviation needs "
                "the same atoms in the same order in every frame"
            )
    atype = types_by_name(symbols, type_map, path)
    coords = np.stack([a.positions for a in frames])
    pbc = {tuple(bool(x) for x in a.pbc) for a in frames}
    if pbc == {(True, True, True)}:
        cells = np.stack([a.cell.array for a in frames])
    elif pbc == {(False, False, False)}:
        cells = None
    else:
        raise ValueError(
            f"{path}: pbc {sorted(pbc)}; every frame must be periodic in all three directions "
            "or in none"
        )
    return coords, cells, atype


def _inputs(spec: str, type_map: list[str], type_names: list[str] | None = None
            ) -> list[tuple[str, Any, Any, np.ndarray]]:
    """(title, coords, cells, atype) of each system that ``spec`` names."""
    if _is_system(spec):
        out = []
        for path in find_systems(spec):
            s = load_system(path, type_map)
            out.append((path, s.coord, s.box, s.atype))
        return out
    return [(spec, *read_trajectory(spec, type_map, type_names))]


def run(args: argparse.Namespace) -> int:
    if args.frequency < 1:
        raise ValueError(f"-f/--frequency must be a positive integer, got {args.frequency}")
    models = load_models(args.models, backend=args.backend)
    type_map = models[0].get_type_map()
    inputs = [item for spec in args.system for item in _inputs(spec, type_map, args.type_names)]
    with open(args.output, "w"):
        pass  # a fresh file: each system then appends its own header block
    for title, coords, cells, atype in inputs:
        devi = model_devi(models, coords, cells, atype, frequency=args.frequency)
        with ModelDeviWriter(args.output, append=True, title=title) as writer:
            writer.write_header(devi.shape[1] - 1)
            writer.write(devi[:, 0], devi[:, 1:])
        print(f"{title}: {len(devi)} frames, max_devi_f up to {devi[:, 4].max():.4g} eV/Å")
    print(f"model deviation written to {args.output}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "model-devi",
        help="model deviation of several models on systems or trajectories, like dp model-devi",
        description="Evaluate every model on every frame and write the deviation of their "
        "virials, forces and energies (max/min/avg over atoms) in DeePMD-kit's model_devi.out "
        "format.",
    )
    p.add_argument("-m", "--models", nargs="+", required=True, metavar="MODEL",
                   help="two or more model files sharing a type map")
    p.add_argument("-s", "--system", nargs="+", required=True, metavar="SYSTEM",
                   help="DeePMD npy/hdf5 systems (or folders holding them), or trajectory "
                   "files read by ase.io.read (extxyz, LAMMPS dump, i-PI xyz, .traj)")
    p.add_argument("-o", "--output", default="model_devi.out",
                   help="output file (default: model_devi.out; overwritten)")
    p.add_argument("-f", "--frequency", type=int, default=1,
                   help="MD steps between frames: step = frame index * FREQUENCY (default 1)")
    p.add_argument("-t", "--type-names", nargs="+", default=None, metavar="NAME",
                   help="element of LAMMPS atom types 1, 2, ... for dumps without an element "
                   "column (default: the models' type map, as pair_style deepmd)")
    p.add_argument("--backend", default=None,
                   help="backend for .dp/.yaml files (default: first installed of torch, jax, "
                   "tensorflow, paddle)")
    p.set_defaults(func=run)
