"""``polypot neighbor-stat -s SYSTEMS -r RCUT -t TYPES``: neighbour statistics of training data.

Prints the smallest distance between two atoms over all frames (``min_nbor_dist``, Å) and, per
type, the largest number of neighbours of that type within ``rcut`` around any atom
(``max_nbor_size``), the numbers to choose a model's ``sel`` from (as ``dp neighbor-stat``).
Periodic images count; the pair search is vesin's O(N) cell list, one call per frame.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.system import DataError, System, find_systems, load_system
from ..neighbor.pairs import find_pairs, new_calculator


def _own_types(systems: list[System]) -> tuple[list[System], int]:
    """Systems in common type indices when no type map was given, and the number of types.

    With ``type_map.raw`` in every system the names are merged (in order of appearance);
    with none, the indices are used as they are.
    """
    named = [s.type_map is not None for s in systems]
    if not any(named):
        return systems, max(int(s.atype.max()) for s in systems) + 1
    if not all(named):
        bare = next(s.path for s in systems if s.type_map is None)
        raise DataError(
            f"system {bare} has no type_map.raw but others have one; give the type map (-t)"
        )
    union: list[str] = []
    for s in systems:
        union += [t for t in s.type_map or [] if t not in union]
    out = []
    for s in systems:
        lookup = np.array([union.index(t) for t in s.type_map or []], dtype=np.int64)
        out.append(System(s.path, lookup[s.atype], s.coord, s.box, type_map=union))
    return out, len(union)


def neighbor_stat(
    systems: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[System],
    rcut: float,
    type_map: Sequence[str] | None = None,
) -> tuple[float, list[int]]:
    """(min_nbor_dist, max_nbor_size) of ``systems`` for cutoff ``rcut`` (Å).

    systems: a path or a list of paths (see :func:`polypot.data.system.find_systems`), or
        loaded :class:`System` objects (their ``atype`` taken as indices into ``type_map``).
    type_map: element names; None uses the systems' own ``type_map.raw``.
    min_nbor_dist: smallest distance (Å) between two atoms (periodic images included) over
        all frames; ``inf`` if no two atoms are closer than ``rcut``.
    max_nbor_size: per type t, the largest number of type-t neighbours within ``rcut`` of
        any atom in any frame.
    """
    if not (isinstance(rcut, numbers.Real) and math.isfinite(rcut) and rcut > 0):
        raise DataError(f"rcut must be a positive number (Å), got {rcut!r}")
    if isinstance(systems, Sequence) and systems and all(isinstance(s, System) for s in systems):
        loaded = list(systems)  # type: ignore[arg-type]
        ntypes = len(type_map) if type_map is not None else 0
        if type_map is None:
            loaded, ntypes = _own_types(loaded)
    else:
        paths = find_systems(systems)  # type: ignore[arg-type]
        if type_map is None:
            loaded, ntypes = _own_types([load_system(p) for p in paths])
        else:
            loaded = [load_system(p, type_map) for p in paths]
            ntypes = len(type_map)
    for s in loaded:
        if s.atype.size and int(s.atype.max()) >= ntypes:
            raise DataError(
                f"system {s.path}: type {int(s.atype.max())} is out of range for "
                f"{ntypes} types"
            )
    calc = new_calculator(float(rcut))
    min_dist = math.inf
    max_nbor = np.zeros(ntypes, dtype=np.int64)
    for s in loaded:
        natoms = s.natoms
        for f in range(s.nframes):
            pairs = find_pairs(s.coord[f], None if s.box is None else s.box[f], float(rcut), calc)
            if pairs.i.size == 0:
                continue
            min_dist = min(min_dist, float(pairs.dist.min()))
            counts = np.bincount(pairs.i * ntypes + s.atype[pairs.j], minlength=natoms * ntypes)
            max_nbor = np.maximum(max_nbor, counts.reshape(natoms, ntypes).max(axis=0))
    return min_dist, [int(n) for n in max_nbor]


def run(args: argparse.Namespace) -> int:
    systems: list[str] = []
    for spec in args.system:
        systems += find_systems(spec)
    min_dist, max_nbor = neighbor_stat(systems, args.rcut, args.type_map)
    print(f"min_nbor_dist: {min_dist:.6f}")
    print(f"max_nbor_size: {max_nbor}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "neighbor-stat",
        help="smallest atom distance and largest neighbour counts per type in training data",
    )
    p.add_argument(
        "-s", "--system", nargs="+", required=True, metavar="SYSTEMS",
        help="system folders, folders searched for systems (holding type.raw), or HDF5 files",
    )
    p.add_argument("-r", "--rcut", type=float, default=6.0, help="cutoff radius in Å (6.0)")
    p.add_argument(
        "-t", "--type-map", nargs="+", default=None, metavar="TYPE",
        help="element names (the model's type_map); default: the systems' type_map.raw",
    )
    p.set_defaults(func=run)
