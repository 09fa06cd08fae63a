"""Training data in DeePMD-kit's ``deepmd/npy`` and ``deepmd/hdf5`` formats.

A *system* is a set of frames with the same atoms in the same order.

npy layout (one folder per system)::

    system/
        type.raw         one integer type per atom (whitespace separated)
        type_map.raw     optional: element names, type i of type.raw is type_map.raw[i]
        nopbc            optional empty marker file: open boundaries, box.npy not needed
        set.000/         frames, split into any number of set.* folders (read in sorted order)
            coord.npy    (nf, natoms*3)  Å
            box.npy      (nf, 9)         Å, rows of the 3x3 matrix are the lattice vectors
            energy.npy   (nf,)           eV          optional
            force.npy    (nf, natoms*3)  eV/Å        optional
            virial.npy   (nf, 9)         eV          optional
            atom_ener.npy (nf, natoms)   eV          optional
        set.001/ ...

hdf5 layout: the same names as datasets in an HDF5 group, addressed as ``file.h5#/path/group``
(datasets ``type.raw``, ``type_map.raw``, ``nopbc``, ``set.000/coord.npy`` ...). ``file.h5``
alone (or ``file.h5#/``) means every group of the file holding a ``type.raw``.

Types are mapped onto the *model's* type map by name: with ``type_map.raw`` = ``["H", "O"]``
and a model ``type_map`` = ``["O", "H"]``, type 0 of type.raw becomes model type 1. Without a
``type_map.raw`` the indices are used as they are.

Every problem with the input raises :class:`DataError`, whose message names the file (and the
set, frame or key) and says what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: optional per-frame labels: name -> (per atom?, columns per atom or per frame)
_LABELS: dict[str, tuple[bool, int]] = {
    "energy": (False, 1),
    "force": (True, 3),
    "virial": (False, 9),
    "atom_ener": (True, 1),
}

_H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


class DataError(ValueError):
    """Training data that cannot be read; the message names the file, array or key and why."""


@dataclass
class System:
    """All frames of one system, in float64 and model type indices.

    path: the system as given (a folder, or ``file.h5#/group``).
    atype: (natoms,) int64 indices into the model's type map (or into the system's own
        ``type_map.raw`` when no model type map was given).
    coord: (nframes, natoms, 3) float64 positions, Å.
    box: (nframes, 3, 3) float64 cells, rows are lattice vectors (Å); None for ``nopbc``.
    energy: (nframes,) eV; force: (nframes, natoms, 3) eV/Å; virial: (nframes, 9) eV;
    atom_ener: (nframes, natoms) eV; each None when the system has no such label.
    type_map: the element names ``atype`` indexes into (the model's type map if one was
        given, else the system's ``type_map.raw``), or None if unknown.
    """

    path: str
    atype: np.ndarray
    coord: np.ndarray
    box: np.ndarray | None
    energy: np.ndarray | None = None
    force: np.ndarray | None = None
    virial: np.ndarray | None = None
    atom_ener: np.ndarray | None = None
    type_map: list[str] | None = None

    @property
    def nframes(self) -> int:
        """Number of frames."""
        return int(self.coord.shape[0])

    @property
    def natoms(self) -> int:
        """Number of atoms per frame."""
        return int(self.atype.shape[0])


# ---------------------------------------------------------------------------------------------
# where a system lives: a folder or an HDF5 group


def _split_h5(path: str) -> tuple[str, str] | None:
    """(file, group) if ``path`` names an HDF5 file (``file.h5`` or ``file.h5#/group``)."""
    if os.path.isdir(path):
        return None
    if "#" in path:
        file, group = path.split("#", 1)
        if os.path.isdir(file):
            return None
        return file, "/" + group.strip("/")
    if os.path.isfile(path) and (path.lower().endswith(_H5_SUFFIXES) or _is_hdf5(path)):
        return path, "/"
    return None


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a dependency
        raise DataError("reading HDF5 systems needs h5py: pip install h5py") from err
    return h5py


class _Source:
    """Read access to one system's files (folder) or datasets (HDF5 group)."""

    label: str

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def text(self, name: str) -> list[str]:
        raise NotImplementedError

    def sets(self) -> list[str]:
        raise NotImplementedError

    def array(self, set_name: str, name: str) -> np.ndarray | None:
        raise NotImplementedError

    def where(self, *parts: str) -> str:
        return "/".join([self.label.rstrip("/"), *parts])

    def close(self) -> None:
        pass


class _DirSource(_Source):
    def __init__(self, path: str) -> None:
        self.label = path
        if not os.path.isdir(path):
            what = "is not a folder" if os.path.exists(path) else "does not exist"
            raise DataError(f"system {path} {what}")

    def has(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.label, name))

    def text(self, name: str) -> list[str]:
        with open(os.path.join(self.label, name), encoding="utf-8") as fh:
            return fh.read().split()

    def sets(self) -> list[str]:
        return sorted(
            d for d in os.listdir(self.label)
            if d.startswith("set.") and os.path.isdir(os.path.join(self.label, d))
        )

    def array(self, set_name: str, name: str) -> np.ndarray | None:
        file = os.path.join(self.label, set_name, name)
        if not os.path.isfile(file):
            return None
        try:
            return np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{file}: not a readable .npy array ({err})") from err


class _H5Source(_Source):
    def __init__(self, file: str, group: str) -> None:
        self.label = f"{file}#{group}"
        if not os.path.isfile(file):
            raise DataError(f"system {self.label}: HDF5 file {file} does not exist")
        h5py = _h5py()
        try:
            self._file = h5py.File(file, "r")
        except OSError as err:
            raise DataError(f"system {self.label}: cannot open {file} as HDF5 ({err})") from err
        if group not in self._file or not isinstance(self._file[group], h5py.Group):
            self._file.close()
            raise DataError(f"system {self.label}: no group {group} in {file}")
        self._group = self._file[group]

    def has(self, name: str) -> bool:
        return name in self._group

    def text(self, name: str) -> list[str]:
        data = self._group[name][()]
        if isinstance(data, bytes | str):
            data = [data]
        out: list[str] = []
        for item in np.asarray(data).ravel().tolist():
            item = item.decode() if isinstance(item, bytes) else str(item)
            out.extend(item.split())
        return out

    def sets(self) -> list[str]:
        h5py = _h5py()
        return sorted(
            k for k, v in self._group.items() if k.startswith("set.") and isinstance(v, h5py.Group)
        )

    def array(self, set_name: str, name: str) -> np.ndarray | None:
        key = f"{set_name}/{name}"
        if key not in self._group:
            return None
        return np.asarray(self._group[key][()])

    def close(self) -> None:
        self._file.close()


def _open(path: str) -> _Source:
    h5 = _split_h5(path)
    if h5 is not None:
        return _H5Source(*h5)
    return _DirSource(path)


# ---------------------------------------------------------------------------------------------
# finding systems


def _h5_systems(file: str, group: str) -> list[str]:
    h5py = _h5py()
    label = f"{file}#{group}"
    if not os.path.isfile(file):
        raise DataError(f"HDF5 file {file} does not exist")
    try:
        fh = h5py.File(file, "r")
    except OSError as err:
        raise DataError(f"cannot open {file} as HDF5 ({err})") from err
    with fh:
        if group not in fh or not isinstance(fh[group], h5py.Group):
            raise DataError(f"{label}: no group {group} in {file}")
        top = fh[group]
        if "type.raw" in top:
            return [label]
        found: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group) and "type.raw" in obj:
                found.append(obj.name)

        top.visititems(visit)
    if not found:
        raise DataError(f"no systems found under {label} (no group holds a type.raw)")
    return [f"{file}#{g}" for g in sorted(found)]


def _dir_systems(root: str) -> list[str]:
    if not os.path.exists(root):
        raise DataError(f"system folder {root} does not exist")
    if not os.path.isdir(root):
        raise DataError(f"{root} is neither a system folder nor an HDF5 file")
    if os.path.isfile(os.path.join(root, "type.raw")):
        return [root]
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symbolic link loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        if "type.raw" in filenames:
            found.append(dirpath)
    if not found:
        raise DataError(f"no systems found under {root} (no sub-folder holds a type.raw)")
    return sorted(found)


def find_systems(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Paths of the systems that ``spec`` names.

    A string (or path) to a folder: the folder itself if it holds ``type.raw``, else every
    sub-folder (recursively, sorted) that does. An HDF5 file (``file.h5`` or ``file.h5#/``):
    every group holding ``type.raw``; ``file.h5#/group``: that group (or its sub-groups
    holding ``type.raw``). A list: each entry as given (an HDF5 file without a group is
    expanded to its systems, as a file is not a system).
    """
    if isinstance(spec, str | os.PathLike):
        path = os.fspath(spec)
        h5 = _split_h5(path)
        if h5 is not None:
            return _h5_systems(*h5)
        return _dir_systems(path)
    if isinstance(spec, Sequence) and not isinstance(spec, bytes):
        out: list[str] = []
        for entry in spec:
            if not isinstance(entry, str | os.PathLike):
                raise DataError(f"systems: expected paths, got {entry!r}")
            path = os.fspath(entry)
            h5 = _split_h5(path)
            out.extend(_h5_systems(*h5) if h5 is not None and "#" not in path else [path])
        if not out:
            raise DataError("systems: the list of systems is empty")
        return out
    raise DataError(f"systems: expected a path or a list of paths, got {spec!r}")


# ---------------------------------------------------------------------------------------------
# reading one system


def _types(src: _Source, type_map: Sequence[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """(atype in model indices, the names atype indexes into)."""
    where = src.where("type.raw")
    if not src.has("type.raw"):
        raise DataError(f"{where} does not exist: every system needs a type.raw")
    tokens = src.text("type.raw")
    try:
        raw = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{where}: expected one integer type per atom ({err})") from err
    if raw.size == 0:
        raise DataError(f"{where} is empty: expected one integer type per atom")
    if raw.min() < 0:
        raise DataError(f"{where}: negative type index {int(raw.min())}")
    model = None if type_map is None else [str(t) for t in type_map]
    if not src.has("type_map.raw"):
        if model is not None and raw.max() >= len(model):
            raise DataError(
                f"{where}: type index {int(raw.max())} is out of range for the model's "
                f"type_map {model} ({len(model)} types); without a type_map.raw the indices "
                "are used as they are"
            )
        return raw, model
    names = src.text("type_map.raw")
    if raw.max() >= len(names):
        raise DataError(
            f"{where}: type index {int(raw.max())} is out of range: "
            f"{src.where('type_map.raw')} has {len(names)} names {names}"
        )
    if model is None:
        return raw, names
    lookup = np.array([model.index(n) if n in model else -1 for n in names], dtype=np.int64)
    used = np.unique(raw)
    missing = [names[u] for u in used if lookup[u] < 0]
    if missing:
        raise DataError(
            f"{src.where('type_map.raw')}: element {missing[0]!r} used in type.raw is not in "
            f"the model's type_map {model}"
            + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
        )
    return lookup[raw], model


def _frames(arr: np.ndarray, ncol: int, where: str, nf: int | None, what: str) -> np.ndarray:
    """``arr`` as (nframes, ncol) float64 after checking type, shape and finiteness."""
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{where}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise DataError(f"{where}: expected {what}, got a scalar")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1) if ncol == 1 else arr.reshape(1, -1)
    arr = arr.reshape(arr.shape[0], -1)
    if nf is not None and arr.shape[0] != nf:
        raise DataError(
            f"{where} has {arr.shape[0]} frames but coord.npy of the same set has {nf}"
        )
    if arr.shape[1] != ncol:
        raise DataError(
            f"{where}: expected {what} per frame = {ncol} columns, got shape {arr.shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}: NaN or infinite value in frame {int(np.flatnonzero(bad)[0])} of this set"
        )
    return arr


def _read(src: _Source, natoms: int, nopbc: bool) -> dict[str, np.ndarray | None]:
    sets = src.sets()
    if not sets:
        raise DataError(f"system {src.label}: no set.* folders (groups) with frames")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("coord", "box", *_LABELS)}
    present: dict[str, list[str]] = {k: [] for k in _LABELS}
    for s in sets:
        coord = src.array(s, "coord.npy")
        if coord is None:
            raise DataError(f"{src.where(s, 'coord.npy')} does not exist")
        coord = _frames(coord, natoms * 3, src.where(s, "coord.npy"), None,
                        f"natoms*3 = {natoms}*3")
        nf = coord.shape[0]
        parts["coord"].append(coord)
        if not nopbc:
            box = src.array(s, "box.npy")
            if box is None:
                raise DataError(
                    f"{src.where(s, 'box.npy')} does not exist: periodic systems need box.npy "
                    "(add an empty file 'nopbc' to the system for open boundaries)"
                )
            parts["box"].append(_frames(box, 9, src.where(s, "box.npy"), nf, "9 (3x3 cell)"))
        for name, (per_atom, ncol) in _LABELS.items():
            arr = src.array(s, f"{name}.npy")
            if arr is None:
                continue
            what = f"natoms*{ncol} = {natoms}*{ncol}" if per_atom else str(ncol)
            cols = natoms * ncol if per_atom else ncol
            parts[name].append(_frames(arr, cols, src.where(s, f"{name}.npy"), nf, what))
            present[name].append(s)
    out: dict[str, np.ndarray | None] = {}
    for name, arrs in parts.items():
        if name in present and arrs and len(arrs) != len(sets):
            lacking = next(s for s in sets if s not in present[name])
            raise DataError(
                f"{src.where(lacking, name + '.npy')} does not exist but other sets of "
                f"{src.label} have {name}.npy: a label must be in every set or in none"
            )
        out[name] = np.concatenate(arrs) if arrs else None
    return out


def load_system(path: str | os.PathLike, type_map: Sequence[str] | None = None) -> System:
    """Read one system (a folder or ``file.h5#/group``); see the module docstring.

    type_map: the model's element names; the system's ``type_map.raw`` names are mapped onto
    it. None keeps the system's own type indices.
    """
    path = os.fspath(path)
    src = _open(path)
    try:
        atype, names = _types(src, type_map)
        natoms = atype.size
        nopbc = src.has("nopbc")
        data = _read(src, natoms, nopbc)
    finally:
        src.close()
    coord = data["coord"]
    assert coord is not None
    nf = coord.shape[0]
    if nf == 0:
        raise DataError(f"system {path} has no frames (every coord.npy is empty)")
    box = data["box"]
    energy, force, virial, atom_ener = (data[k] for k in _LABELS)
    return System(
        path=path,
        atype=atype,
        coord=coord.reshape(nf, natoms, 3),
        box=None if box is None else box.reshape(nf, 3, 3),
        energy=None if energy is None else energy.reshape(nf),
        force=None if force is None else force.reshape(nf, natoms, 3),
        virial=virial,
        atom_ener=atom_ener,
        type_map=names,
    )


def load_systems(
    spec: str | os.PathLike | Sequence[str | os.PathLike],
    type_map: Sequence[str] | None = None,
) -> list[System]:
    """:func:`load_system` on every system :func:`find_systems` finds in ``spec``."""
    return [load_system(p, type_map) for p in find_systems(spec)]
