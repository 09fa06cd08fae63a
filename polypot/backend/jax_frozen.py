"""JAX frozen files (``.hlo``): ``jax.export`` StableHLO programs of the lower interface.

Layout (DeePMD-kit's ``.hlo``, which is a ``.dp`` file with extra entries): an HDF5 file whose
root attribute ``json`` holds the top-level model dictionary as compact JSON, every value under
an ``@variables`` key being stored as dataset ``/variable_NNNN`` and replaced by its path.
Besides the neutral dictionary (``backend``, ``model``, ``model_def_script``, ``@variables``)::

    @variables.stablehlo                 serialized jax.export.Exported (np.void bytes), energy,
                                         force, virial, atom_energy
    @variables.stablehlo_atomic_virial   the same plus atom_virial
    constants                            DeePMD-kit's constants (type_map, rcut, sel, ...)
    polypot                              frozen_metadata(...) and the program signature

Both programs take coord_ext (nf, nall, 3) (model precision), atype_ext (nf, nall) int64,
nlist (nf, nloc, nnei) int64, mapping (nf, nall) int64, with symbolic nf, nall, nloc
(``nall >= nloc``, so one program serves systems with and without ghost atoms; DeePMD-kit's
``*_no_ghost`` variants are not needed) and nnei = sum(sel) fixed. They are exported for CPU and
CUDA. Loading imports jax, numpy and h5py only, never ``polypot.model``.

se_e2_a and DPA-1 files (plain or compressed; DPA-1 with attention layers only if frozen since
2026-11-28) also hold polypot's ``@variables.stablehlo_narrow`` (older readers and DeePMD-kit
ignore it): the default program for neighbour lists cut after the last column any atom uses in
each type section (DPA-1: the one mixed section), passed as one array per section,
(nf, nloc, w_t) with symbolic w_t <= sel[t] (sel as in the metadata). ``run`` cuts the full list
itself and uses it; the result is the full program's (``EnergyModel.narrowed``), with fewer
padded slots through the embedding nets and attention layers (water, se_e2_a sel [46, 92]:
[36, 68] columns used; DPA-1 sel 120: 104). For compressed models with one fitting net per type
(``sorts_centres``; ``polypot.programs`` says ``narrow_sorted``) it also takes the local atoms
sorted by type, one int8 marker array (n_t,) per type after the mapping, nloc = sum n_t, so
each net runs on its own rows; ``run`` sorts them and puts the per-atom results back, and runs
the full program where a type is absent or frames differ in their types. Narrow programs
frozen since 2026-11-29 also return extended_force (nf, nall, 3), the forces before the mapping
folds them: ``run`` then splits a large frame's atoms between several calls, two at a time
(``_run_pieces``); older readers ignore the extra output.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import jax as _jax_backend  # enables float64 before jax traces or runs anything
from .base import check_lower_inputs, frozen_metadata

jax = _jax_backend.jax
jnp = _jax_backend.jnp

#: program name in ``@variables`` for ``atomic`` False / True (DeePMD-kit's names)
PROGRAMS = {False: "stablehlo", True: "stablehlo_atomic_virial"}
#: polypot's program for narrowed neighbour lists (``EnergyModel.narrowed``): as ``stablehlo``
#: but the list comes as one array per type section, (nf, nloc, w_t) with symbolic w_t <= sel[t]
NARROW_PROGRAM = "stablehlo_narrow"
#: the ``programs`` entry of a narrow program whose local atoms come sorted by type, one
#: marker array (n_t,) per type after the mapping (``sorts_centres``); "narrow" otherwise
SORTED_NARROW = "narrow_sorted"
#: ``run`` splits the local atoms of one frame between concurrent calls of a narrow program
#: that returns extended_force (the forces before the mapping folds them; programs frozen since
#: 2026-11-29) from this many local atoms up, on CPUs with two or more cores: XLA's CPU
#: runtime runs one call's operations mostly one after another (water, 2 cores: 1.5 cores
#: busy), two calls at once use both (se_e2_a / DPA-1 L0, 1536 atoms: -9% / -20% per call;
#: 384 atoms -3% / -13%; 192 atoms +2% / -9%; bench/README.md). Compressed se_e2_a (the
#: :data:`SORTED_NARROW` program) split only from 1024 atoms before the calls were kept under
#: :data:`CALL_TEMP_BYTES`; now it gains from 384 atoms (2 Zen 5 cores: 384 atoms 22.2 ->
#: 19.6 ms, 768 atoms 37.8 -> 28.9 ms). POLYPOT_SPLIT_CENTRES=0 turns it off
SPLIT_MIN_ATOMS = int(os.environ.get("POLYPOT_SPLIT_MIN_ATOMS", "256"))
#: calls of a split frame that run at once (one thread each)
SPLIT_THREADS = 2
#: largest temporary buffer (bytes, as XLA's memory analysis of the compiled call reports it)
#: of one call of a split frame; a frame is split into more calls until they fit. glibc
#: serves a block over 32 MiB with a fresh ``mmap`` at every call, which the call then
#: page-faults in (compressed se_e2_a water, 1536 atoms, two calls of 41 MiB: 20,800 faults
#: and 34 ms of system time per step of 68 ms); smaller blocks it keeps for the next call.
#: POLYPOT_CALL_TEMP_MB sets it
CALL_TEMP_BYTES = int(float(os.environ.get("POLYPOT_CALL_TEMP_MB", "28")) * 2**20)
#: fewest centres per call when a split frame's calls are made smaller
MIN_PIECE_CENTRES = 64
#: section widths of a narrowed list are rounded up to a multiple of this (fewer compilations)
WIDTH_MULTIPLE = 4
#: platforms the programs are lowered for
PLATFORMS = ("cpu", "cuda")
#: symbolic dimensions and their constraint
SYMBOLS = "nf, nall, nloc"
CONSTRAINTS = ("nall >= nloc",)
#: the newest ``polypot.format_version`` read; 2: the narrow program may take the local atoms
#: sorted by type (``SORTED_NARROW``; older readers would call it without its markers). Files
#: without it are written as 1, which every reader takes
FORMAT_VERSION = 2
#: the extended atom count is padded up to a multiple of this before a program runs (one XLA
#: compilation per bucket instead of one per MD step whose image count differs)
NALL_MULTIPLE = 128


def _model_format_error() -> type[Exception]:
    from ..errors import ModelFormatError

    return ModelFormatError


# ---- HDF5 in the .dp conventions ---------------------------------------------------------------
def _map_variables(obj: Any, fn: Callable[[Any], Any], inside: bool = False) -> Any:
    """Apply ``fn`` to every leaf under an ``@variables`` key (as ``polypot.io.neutral``)."""
    if isinstance(obj, dict):
        return {k: _map_variables(v, fn, inside or k == "@variables") for k, v in obj.items()}
    if isinstance(obj, list):
        return obj if (inside and not obj) else [_map_variables(v, fn, inside) for v in obj]
    return fn(obj) if inside else obj


def _write_h5(path: Path, doc: dict) -> None:
    """Write ``doc`` atomically (temporary file in the same folder, then ``os.replace``)."""
    import h5py

    from ..io.neutral import atomic_write

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            counter = 0

            def store(x: Any) -> Any:
                nonlocal counter
                if isinstance(x, (int, float)) and not isinstance(x, bool):
                    x = np.asarray(x)
                if not isinstance(x, (np.ndarray, np.void)):
                    return x
                name = f"variable_{counter:04d}"
                counter += 1
                f.create_dataset(name, data=x)
                return "/" + name

            f.attrs["json"] = json.dumps(_map_variables(doc, store), separators=(",", ":"))

    atomic_write(path, write)


def _read_h5(path: Path) -> dict:
    """The dictionary of a file written by :func:`_write_h5` (or any ``.dp``)."""
    import h5py

    error = _model_format_error()
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise error(f"{path}: not a readable .hlo (HDF5) file: {err}") from None
    with f:
        try:
            doc = json.loads(f.attrs["json"])
        except KeyError:
            raise error(f"{path}: HDF5 file has no 'json' attribute; not a .hlo model") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise error(f"{path}: the 'json' attribute is not valid JSON: {err}") from None
        if not isinstance(doc, dict):
            raise error(f"{path}: the 'json' attribute is not a dictionary")

        def fetch(x: Any) -> Any:
            if isinstance(x, str) and x.startswith("/"):
                try:
                    return f[x][()]
                except (KeyError, OSError) as err:
                    raise error(f"{path}: dataset {x} cannot be read: {err}") from None
            return x

        return _map_variables(doc, fetch)


# ---- freeze ------------------------------------------------------------------------------------
def sorts_centres(model: Any) -> bool:
    """True if the narrow program of ``model`` takes its local atoms sorted by type
    (:data:`SORTED_NARROW`): compressed models with one fitting net per type, whose fitting
    runs on the whole system (uncompressed models group centres by type in their chunks)."""
    return (not model.mixed_types
            and getattr(model.atomic.descriptor, "compress", None) is not None)


def export_program(model: Any, params: Any, atomic: bool, narrow: bool = False) -> bytes:
    """Serialized ``jax.export`` program of the lower interface (parameters as constants);
    ``narrow``: the :data:`NARROW_PROGRAM` (one nlist array per type section; for
    :func:`sorts_centres` models also one marker (n_t,) per type, local atoms sorted by type,
    nloc = sum n_t)."""
    from ..model.precision import to_dtype
    from .jax_kernels import centres_sorted_by_type

    p = _jax_backend.JaxBackend().convert_params(params)
    nsections = 1 if isinstance(model.sel, int) else len(model.sel)
    widths = "".join(f", w{t}" for t in range(nsections)) if narrow else ""
    ntypes = len(model.type_map)
    sort = narrow and sorts_centres(model)
    counts = "".join(f", n{t}" for t in range(ntypes)) if sort else ""
    constraints = CONSTRAINTS + ((f"nloc == {' + '.join(f'n{t}' for t in range(ntypes))}",)
                                 if sort else ())
    nf, nall, nloc, *extra = jax.export.symbolic_shape(SYMBOLS + widths + counts,
                                                       constraints=constraints)
    ws, ns = (extra[:nsections], extra[nsections:]) if narrow else ([], [])
    if narrow:
        model = model.narrowed(tuple(ws))
        nlists = [jax.ShapeDtypeStruct((nf, nloc, w), jnp.int64) for w in ws]
    else:
        nlists = [jax.ShapeDtypeStruct((nf, nloc, int(np.sum(model.sel))), jnp.int64)]
    markers = [jax.ShapeDtypeStruct((n,), jnp.int8) for n in ns]
    fn = _jax_backend.lower_function(model, atomic, extended=narrow)

    def program(coord_ext: Any, atype_ext: Any, *rest: Any) -> dict:
        lists, mapping = rest[:len(nlists)], rest[len(nlists)]
        nlist = lists[0] if len(lists) == 1 else jnp.concatenate(lists, axis=-1)
        if not sort:
            return fn(p, coord_ext, atype_ext, nlist, mapping)
        with centres_sorted_by_type(tuple(m.shape[0] for m in rest[len(nlists) + 1:])):
            return fn(p, coord_ext, atype_ext, nlist, mapping)

    exported = jax.export.export(jax.jit(program), platforms=PLATFORMS)(
        jax.ShapeDtypeStruct((nf, nall, 3), to_dtype(model.precision)),
        jax.ShapeDtypeStruct((nf, nall), jnp.int64),
        *nlists,
        jax.ShapeDtypeStruct((nf, nall), jnp.int64),
        *markers,
    )
    return bytes(exported.serialize())


def _constants(model: Any) -> dict:
    """DeePMD-kit's ``constants`` entry of a ``.hlo`` file (energy models, no fparam/aparam)."""
    sel = model.sel
    return {
        "type_map": list(model.type_map),
        "rcut": float(model.rcut),
        "dim_fparam": 0,
        "dim_aparam": 0,
        "sel_type": [],
        "is_aparam_nall": False,
        "model_output_type": ["energy"],
        "mixed_types": bool(model.mixed_types),
        "min_nbor_dist": None,
        "sel": [sel] if isinstance(sel, int) else list(sel),
    }


def freeze(model: Any, params: Any, path: str | os.PathLike,
           model_def_script: dict | None = None) -> None:
    """Write ``model`` with ``params`` to the ``.hlo`` file ``path`` (atomically)."""
    from .. import __version__
    from ..io.model_file import model_to_dict

    path = Path(path)
    doc = model_to_dict(model, params, model_def_script)
    doc["@variables"] = dict(doc["@variables"])
    for atomic, key in PROGRAMS.items():
        doc["@variables"][key] = np.void(export_program(model, params, atomic))
    narrow = model.narrowable
    if narrow:
        doc["@variables"][NARROW_PROGRAM] = np.void(export_program(model, params, False, True))
    doc["constants"] = _constants(model)
    doc["polypot"] = {
        "format": "jax-hlo",
        "format_version": FORMAT_VERSION if narrow and sorts_centres(model) else 1,
        "metadata": frozen_metadata(model, "jax", model_def_script),
        "jax_version": jax.__version__,
        "symbols": SYMBOLS,
        "constraints": list(CONSTRAINTS),
        "nnei": int(np.sum(model.sel)),
        "platforms": list(PLATFORMS),
        "programs": {key: "atomic" if atomic else "default" for atomic, key in PROGRAMS.items()},
    }
    if narrow:
        doc["polypot"]["programs"][NARROW_PROGRAM] = (SORTED_NARROW if sorts_centres(model)
                                                      else "narrow")
    doc.update(software="polypot", version=__version__, time=str(datetime.now(UTC)))
    _write_h5(path, doc)


def _pad_atoms(coord: np.ndarray, atype: np.ndarray, mapping: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append padding atoms (type -1, at 0, mapped to atom 0) up to a multiple of
    ``NALL_MULTIPLE``: XLA compiles one executable per concrete shape, and in MD the number of
    periodic images changes from step to step. Padding atoms are nobody's neighbours, so they
    add nothing to energies, forces or virials."""
    nf, nall = atype.shape
    extra = -nall % NALL_MULTIPLE
    if extra == 0:
        return coord, atype, mapping
    return (np.concatenate([coord, np.zeros((nf, extra, 3), coord.dtype)], axis=1),
            np.concatenate([atype, np.full((nf, extra), -1, atype.dtype)], axis=1),
            np.concatenate([mapping, np.zeros((nf, extra), mapping.dtype)], axis=1))


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _output_names(program: Any) -> set[str]:
    """The keys of the dict a ``jax.export.Exported`` program returns."""
    tree = program.out_tree
    out = jax.tree_util.tree_unflatten(tree, list(range(tree.num_leaves)))
    return set(out) if isinstance(out, dict) else set()


def _centres_first(coord: np.ndarray, atype: np.ndarray, sections: list[np.ndarray],
                   centres: np.ndarray, types: np.ndarray, size: int) -> tuple:
    """One frame's extended system reordered for a call whose centres are ``centres`` (local
    atom numbers; -1: a padding centre of type ``types[i]`` at the origin, no neighbours): the
    centres first, then every other atom in the caller's order, then padding atoms (type -1) up
    to ``size`` atoms; the list's rows are the centres', renumbered. Returns the coordinates,
    types, list sections and ``order`` (the caller's atom at each position, -1: padding)."""
    nall = atype.shape[1]
    rest = np.ones(nall, bool)
    rest[centres[centres >= 0]] = False
    order = np.concatenate([centres, np.flatnonzero(rest)])
    order = np.concatenate([order, np.full(size - order.size, -1)])
    kept = order >= 0
    remap = np.empty(nall, np.int64)
    remap[order[kept]] = np.flatnonzero(kept)
    new_coord = np.where(kept[None, :, None], coord[:, order], 0).astype(coord.dtype)
    new_type = np.where(kept[None], atype[:, order], -1).astype(atype.dtype)
    new_type[0, :centres.size] = types
    rows = np.where(centres >= 0, centres, 0)
    lists = []
    for s in sections:
        part = s[:, rows]
        part = np.where((part >= 0) & (centres >= 0)[None, :, None], remap[part], -1)
        lists.append(part.astype(s.dtype))
    return new_coord, new_type, lists, order


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _split_size(atype: np.ndarray, pieces: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Atoms of each call of a split frame before padding: the frame's extended atoms plus the
    most padding centres of any call (:func:`_centres_first`)."""
    return atype.shape[1] + max(int(np.sum(c < 0)) for c, _ in pieces)


def _split_centres(local: np.ndarray, counts: np.ndarray | None, k: int
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The centres (local atom numbers; -1: padding) and their types of each of ``k`` calls
    of a split frame whose local atoms have types ``local``. ``counts`` None: consecutive
    blocks of atoms, padding of atom 0's type; else (the count of each type, for the sorted
    program) ceil(n_t / k) atoms of each type t per call, types in order."""
    groups = ([np.arange(local.size)] if counts is None
              else [np.flatnonzero(local == t) for t in range(len(counts))])
    parts: list[tuple[list, list]] = [([], []) for _ in range(k)]
    for idx in groups:
        h = -(-idx.size // k)
        for p, (centres, types) in enumerate(parts):
            part = idx[p * h:(p + 1) * h]
            centres.append(np.concatenate([part, np.full(h - part.size, -1)]))
            types.append(np.concatenate([local[part], np.full(h - part.size, local[idx[0]])]))
    return [(np.concatenate(c), np.concatenate(t)) for c, t in parts]


# ---- load --------------------------------------------------------------------------------------
class JaxFrozenModel:
    """A loaded ``.hlo`` file: deserialized programs, metadata and the neutral dictionary."""

    def __init__(self, doc: dict, source: str = "model") -> None:
        error = _model_format_error()
        info = doc.get("polypot")
        variables = doc.get("@variables")
        if not isinstance(info, dict) or not isinstance(variables, dict) \
                or not isinstance(info.get("metadata"), dict) or "nnei" not in info:
            raise error(f"{source}: not a polypot .hlo file (no 'polypot' / '@variables' entry)")
        if info.get("format_version", 0) > FORMAT_VERSION:
            raise error(f"{source}: .hlo format_version {info['format_version']} is newer "
                        f"than this polypot reads ({FORMAT_VERSION}); upgrade polypot")
        self.metadata: dict = dict(info["metadata"])
        self.nnei = int(info["nnei"])
        self._doc = doc
        self._source = source
        self._calls: dict[bool, Callable[..., Any]] = {}
        self._programs: dict[bool, Any] = {}
        for atomic, key in PROGRAMS.items():
            if variables.get(key) is None:
                raise error(f"{source}: program {key!r} is missing")
            self._programs[atomic] = _deserialize(variables[key], key, source)
        self.coord_dtype = np.dtype(self._programs[False].in_avals[0].dtype)
        # narrowed neighbour lists: se_e2_a and DPA-1 files frozen
        # since the narrow program was added
        self._narrow = None
        self.sections: list[int] | None = None
        extended = False  # the narrow program returns extended_force
        sel = self.metadata.get("sel")
        sel = [sel] if isinstance(sel, int) else sel
        if variables.get(NARROW_PROGRAM) is not None and isinstance(sel, list):
            program = _deserialize(variables[NARROW_PROGRAM], NARROW_PROGRAM, source)
            self._narrow = _jax_backend.cpu_jit(program.call)
            self.sections = [int(s) for s in sel]
            self._widths = [0] * len(self.sections)
            extended = "extended_force" in _output_names(program)
        kind = info.get("programs", {}).get(NARROW_PROGRAM)
        self.sorted = self._narrow is not None and kind == SORTED_NARROW
        self.splits = (extended and _jax_backend.jax.default_backend() == "cpu"
                       and _usable_cpus() >= 2
                       and os.environ.get("POLYPOT_SPLIT_CENTRES", "") != "0")
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._split_shapes: set[tuple] = set()
        self._piece_counts: dict[int, int] = {}  # calls per split frame, by local atom count
        self._centre_bytes = 0  # the largest temporary buffer per centre of a call seen

    def _call(self, atomic: bool) -> Callable[..., Any]:
        if atomic not in self._calls:
            self._calls[atomic] = _jax_backend.cpu_jit(self._programs[atomic].call)
        return self._calls[atomic]

    def run(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
            atomic: bool = False) -> dict:
        """NumPy in, NumPy out: energy (nf, 1), force (nf, nloc, 3), virial (nf, 9),
        atom_energy (nf, nloc, 1) [, atom_virial (nf, nloc, 9)]; shapes as in ``base``."""
        coord, atype, nl, mp = check_lower_inputs(coord_ext, atype_ext, nlist, mapping,
                                                  self.coord_dtype, self.nnei)
        coord, atype, mp = _pad_atoms(coord, atype, mp)
        if self.sorted and not atomic:
            counts = self._sorted_counts(atype, nl)
            if counts is not None:
                if self._split(nl):
                    return self._run_pieces(coord, atype, nl, mp, counts)
                return self._run_sorted(coord, atype, nl, mp, counts)
        elif not atomic and self._split(nl):
            return self._run_pieces(coord, atype, nl, mp)
        if self._narrow is not None and not atomic and not self.sorted:
            out = self._narrow(coord, atype, *self._narrow_sections(nl), mp)
        else:
            out = self._call(bool(atomic))(coord, atype, nl, mp)
        return {k: np.array(v) for k, v in out.items() if k != "extended_force"}

    def _split(self, nl: np.ndarray) -> bool:
        """Whether ``run`` splits the centres of this list (one frame, enough atoms)."""
        return self.splits and nl.shape[0] == 1 and nl.shape[1] >= SPLIT_MIN_ATOMS

    def _sorted_counts(self, atype: np.ndarray, nl: np.ndarray) -> np.ndarray | None:
        """The local atoms' count per type for the :data:`SORTED_NARROW` program, or None (run
        the full program) unless every frame has the same local types and every type is
        present (the program's counts are at least 1)."""
        nloc, ntypes = nl.shape[1], len(self.sections)
        local = atype[:, :nloc]
        if nloc == 0 or np.any(local != local[:1]) or local.min() < 0:
            return None
        counts = np.bincount(local[0], minlength=ntypes)
        if counts.size != ntypes or counts.min() == 0:
            return None
        return counts

    def _run_sorted(self, coord: np.ndarray, atype: np.ndarray, nl: np.ndarray,
                    mp: np.ndarray, counts: np.ndarray) -> dict:
        """The :data:`SORTED_NARROW` program on the local atoms sorted by type (stable), the
        per-atom results put back in the caller's order."""
        nloc = nl.shape[1]
        local = atype[:, :nloc]
        perm = np.argsort(local[0], kind="stable")
        inv = np.empty_like(perm)
        inv[perm] = np.arange(nloc)
        remap = np.concatenate([inv, np.arange(nloc, atype.shape[1])])  # old -> new index
        coord = np.concatenate([coord[:, perm], coord[:, nloc:]], axis=1)
        atype = np.concatenate([local[:, perm], atype[:, nloc:]], axis=1)
        mp = remap[np.concatenate([mp[:, perm], mp[:, nloc:]], axis=1)]
        nl = nl[:, perm]
        nl = np.where(nl >= 0, remap[nl], nl)
        markers = [np.zeros(n, np.int8) for n in counts]
        out = self._narrow(coord, atype, *self._narrow_sections(nl), mp, *markers)
        # per-atom results (nf, nloc, k) back to the caller's order
        return {k: np.array(v)[:, inv] if np.ndim(v) == 3 else np.array(v)
                for k, v in out.items() if k != "extended_force"}

    def _run_pieces(self, coord: np.ndarray, atype: np.ndarray, nl: np.ndarray,
                    mp: np.ndarray, counts: np.ndarray | None = None) -> dict:
        """One frame's local atoms split into pieces, each the centres of its own call of the
        narrow program, :data:`SPLIT_THREADS` calls at a time (XLA runs a call mostly on one
        core); energies, virials and the unfolded forces (extended_force) of the calls summed.

        Each call sees every atom, its centres first (in type order for the sorted program of
        ``counts``, the count per type), the list renumbered. Every call gets the same number
        of centres of each type, padded with centres without neighbours (no forces; their
        atomic energies are taken off), so all have the same shapes: one compilation. Two
        pieces, unless a call's temporary buffer would exceed :data:`CALL_TEMP_BYTES`
        (:meth:`_piece_count`)."""
        nloc = nl.shape[1]
        local = atype[0, :nloc]
        sections = self._narrow_sections(nl)  # widths from the whole list, shared by the calls
        k = self._piece_counts.get(nloc)
        if k is None:
            k = self._piece_counts[nloc] = self._piece_count(coord, atype, sections, counts)
        pieces = _split_centres(local, counts, k)
        size = _split_size(atype, pieces)

        def call(piece: tuple[np.ndarray, np.ndarray]) -> tuple[dict, np.ndarray]:
            args, order = self._piece_args(coord, atype, sections, piece, size)
            return {key: np.asarray(v) for key, v in self._narrow(*args).items()}, order

        shapes = (size, tuple(s.shape[2] for s in sections), pieces[0][0].size)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                SPLIT_THREADS, thread_name_prefix="polypot-centres")
        if shapes in self._split_shapes:
            outs = list(self._pool.map(call, pieces))
        else:  # the first call compiles: once, not in several threads at the same time
            outs = [call(pieces[0]), *self._pool.map(call, pieces[1:])]
            self._split_shapes.add(shapes)
        nall = atype.shape[1]
        f_ext = np.zeros((1, nall, 3), coord.dtype)
        atom_energy = np.zeros((1, nloc, 1), coord.dtype)
        energy, virial = 0.0, 0.0
        for (centres, _), (out, order) in zip(pieces, outs, strict=True):
            kept = np.flatnonzero(order >= 0)
            f_ext[:, order[kept]] += out["extended_force"][:, kept]
            real = centres >= 0
            own = out["atom_energy"][:, :centres.size]  # this call's centres
            atom_energy[:, centres[real]] = own[:, real]
            energy = energy + out["energy"] - np.sum(own[:, ~real], axis=1)
            virial = virial + out["virial"]
        force = np.stack([np.bincount(mp[0], weights=f_ext[0, :, i], minlength=nloc)
                          for i in range(3)], axis=-1)[None]
        return {"energy": energy, "atom_energy": atom_energy, "force": force.astype(coord.dtype),
                "virial": virial}

    def _piece_args(self, coord: np.ndarray, atype: np.ndarray, sections: list[np.ndarray],
                    piece: tuple[np.ndarray, np.ndarray], size: int) -> tuple[tuple, np.ndarray]:
        """The narrow program's arguments for one piece (centres, types) of a split frame of
        ``size`` atoms before padding, and ``order`` (see :func:`_centres_first`)."""
        c, t, lists, order = _centres_first(coord, atype, sections, *piece, size)
        c, t, z = _pad_atoms(c, t, np.zeros(t.shape, np.int64))  # folded force: not used
        markers = []
        if self.sorted:  # the count of each type in the call
            markers = [np.zeros(n, np.int8) for n in np.bincount(piece[1], minlength=len(
                self.sections))]
        return (c, t, *lists, z, *markers), order

    def _piece_count(self, coord: np.ndarray, atype: np.ndarray, sections: list[np.ndarray],
                     counts: np.ndarray | None) -> int:
        """How many calls a frame of these atoms is split into: a multiple of
        :data:`SPLIT_THREADS`, the fewest whose calls' temporary buffer (XLA's memory analysis
        of the compiled call) fits in :data:`CALL_TEMP_BYTES`, down to about
        :data:`MIN_PIECE_CENTRES` centres per call. The first guess scales the largest buffer
        per centre seen so far; a shape found too large is compiled again smaller, the
        rejected executables dropped (:meth:`~polypot.backend.jax._CompiledPerShape.forget`)."""
        nloc = sections[0].shape[1]
        local = atype[0, :nloc]
        most = _round_up(max(-(-nloc // MIN_PIECE_CENTRES), 1), SPLIT_THREADS)
        k = min(max(_round_up(-(-nloc * self._centre_bytes // CALL_TEMP_BYTES),
                              SPLIT_THREADS), SPLIT_THREADS), most)
        while True:
            pieces = _split_centres(local, counts, k)
            args, _ = self._piece_args(coord, atype, sections, pieces[0],
                                       _split_size(atype, pieces))
            temp = self._narrow.temp_bytes(*args) if hasattr(self._narrow, "temp_bytes") \
                else None
            per_call = pieces[0][0].size
            if temp is None:
                return k
            self._centre_bytes = max(self._centre_bytes, -(-temp // per_call))
            if temp <= CALL_TEMP_BYTES or k >= most:
                return k
            self._narrow.forget()
            self._split_shapes.clear()
            # a call's buffer is a fixed part plus a part per centre: aim below the limit
            k = min(max(_round_up(-(-k * temp * 4 // (3 * CALL_TEMP_BYTES)), SPLIT_THREADS),
                        k + SPLIT_THREADS), most)

    def _narrow_sections(self, nl: np.ndarray) -> list[np.ndarray]:
        """The type sections of the full list ``nl`` cut after their last used column over
        all atoms, widths rounded up to ``WIDTH_MULTIPLE`` and never below the widths used
        before (each new set of widths compiles the program once more)."""
        out, start = [], 0
        for t, sel in enumerate(self.sections):
            used = np.flatnonzero(np.any(nl[..., start:start + sel] >= 0, axis=(0, 1)))
            need = int(used[-1]) + 1 if used.size else 0
            width = min(sel, max(-(-need // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, WIDTH_MULTIPLE,
                                 self._widths[t]))
            self._widths[t] = width
            out.append(np.ascontiguousarray(nl[..., start:start + width]))
            start += sel
        return out

    def neutral_dict(self) -> dict:
        """The neutral model dictionary (as ``polypot.io.neutral.load_neutral`` returns)."""
        doc = {k: v for k, v in self._doc.items() if k not in ("constants", "polypot")}
        doc["@variables"] = {k: v for k, v in doc.get("@variables", {}).items()
                             if not k.startswith("stablehlo")}
        return copy.deepcopy(doc)


def _deserialize(blob: Any, key: str, source: str) -> Any:
    """The ``jax.export.Exported`` program stored as ``blob`` (np.void bytes)."""
    try:
        return jax.export.deserialize(bytearray(np.asarray(blob).tobytes()))
    except Exception as err:  # any decoding failure means a bad file
        raise _model_format_error()(f"{source}: program {key!r} cannot be deserialized: "
                                    f"{err}") from None


def load_frozen(path: str | os.PathLike) -> JaxFrozenModel:
    """Read a ``.hlo`` file written by :func:`freeze`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return JaxFrozenModel(_read_h5(path), str(path))
