"""Batches of frames with their neighbour data, for training, validation and statistics.

:class:`DataLoader` serves :class:`Batch` es, each holding frames of one system (all frames of
a batch have the same atoms), the labels of those frames and their extended system and
neighbour list (:class:`polypot.neighbor.NeighborData`), padded to a common number of
extended atoms that is a multiple of ``nall_multiple`` so that compiled backends see few
distinct shapes.

The neighbour data of a frame is built once, the first time the frame is used (one vectorised
:func:`polypot.neighbor.build_neighbor_data` call over the batch's new frames), kept, and
re-used in later epochs. Neighbour-list overflow warnings are passed on.

Two ways to draw batches:

* :meth:`DataLoader.next_batch` (training) draws a system with probability proportional to its
  number of batches, ``nframes / batch_size`` (DeePMD-kit's default ``prob_sys_size``), then
  takes the next ``batch_size`` frames of that system's current pass, a random permutation of
  its frames drawn anew for every pass. A pass ends when fewer than ``batch_size`` frames are
  left in it (those are skipped in that pass; every pass is shuffled afresh, so no frame is
  skipped for long), so training batches always have ``min(batch_size, nframes)`` frames.
  :meth:`DataLoader.state_dict` / :meth:`DataLoader.load_state_dict` save and restore this
  sampler exactly (JSON-serialisable), for restarts.
* :meth:`DataLoader.iter_batches` (validation, test, statistics) is deterministic: every
  system in order, its frames in order, in batches of its batch size (the last may be short).
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..neighbor import NeighborData, build_neighbor_data
from .system import DataError, System

#: the number of atoms ``"auto"`` batch sizes reach (DeePMD-kit's default)
AUTO_ATOMS = 32

_STATE_VERSION = 1


@dataclass
class Batch:
    """Frames of one system with their labels and neighbour data.

    system: path of the system. frames: (nb,) int64 frame indices in that system.
    nd: neighbour data of the nb frames, extended atoms padded (type -1, coord 0,
        mapping 0) to a multiple of the loader's ``nall_multiple``.
    natoms: atoms per frame (``nd.nloc``).
    energy (nb,), force (nb, natoms, 3), virial (nb, 9), atom_ener (nb, natoms): the labels
        of those frames, None where the system has none. box: (nb, 3, 3) cells or None.
    """

    system: str
    frames: np.ndarray
    nd: NeighborData
    natoms: int
    energy: np.ndarray | None
    force: np.ndarray | None
    virial: np.ndarray | None
    atom_ener: np.ndarray | None
    box: np.ndarray | None = None


def parse_batch_size(batch_size: int | str, natoms: int) -> int:
    """Frames per batch for a system of ``natoms`` atoms.

    An int is used as is (>= 1). ``"auto"``: the smallest b with b * natoms >= 32;
    ``"auto:N"``: the smallest b with b * natoms >= N.
    """
    if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool | np.bool_):
        if int(batch_size) < 1:
            raise DataError(f"batch_size {batch_size!r}: must be at least 1")
        return int(batch_size)
    bad = DataError(
        f"batch_size {batch_size!r}: expected a positive int, 'auto' or 'auto:N' "
        "(N a positive number of atoms)"
    )
    if not isinstance(batch_size, str):
        raise bad
    text = batch_size.strip()
    if text.isdigit():
        return parse_batch_size(int(text), natoms)
    if text == "auto":
        target = AUTO_ATOMS
    elif text.startswith("auto:"):
        try:
            target = int(text[5:])
        except ValueError:
            raise bad from None
        if target < 1:
            raise bad
    else:
        raise bad
    if natoms < 1:
        raise DataError(f"batch_size {batch_size!r}: the system has no atoms")
    return max(1, -(-target // natoms))


class _FrameCache:
    """Per-frame extended coordinates, mapping and neighbour list of one system."""

    def __init__(self, nframes: int) -> None:
        self.built = np.zeros(nframes, dtype=bool)
        self.coord: list[np.ndarray | None] = [None] * nframes
        self.mapping: list[np.ndarray | None] = [None] * nframes
        self.nlist: list[np.ndarray | None] = [None] * nframes
        self.overflow = np.zeros(nframes, dtype=np.int64)


class DataLoader:
    """Training and evaluation batches over a list of systems (see the module docstring).

    systems: loaded systems (:func:`polypot.data.system.load_systems`), types in model indices.
    batch_size: int, ``"auto"``, ``"auto:N"``, or a list with one of those per system.
    rcut, sel: cutoff (Å) and neighbour selection passed to ``build_neighbor_data``.
    seed: seed of the sampler's ``numpy`` Generator (None: fresh entropy).
    nall_multiple: extended atoms of a batch are padded to a multiple of this.
    pad_pow2: pad them to at least the next power of two (for compiled backends: padding
        atoms cost little, recompiling for every new extended-atom count costs seconds).
    """

    def __init__(
        self,
        systems: Sequence[System],
        batch_size: int | str | Sequence[int | str],
        rcut: float,
        sel: int | list[int],
        seed: int | None = None,
        nall_multiple: int = 128,
        pad_pow2: bool = False,
    ) -> None:
        self.systems = list(systems)
        self.nsystems = len(self.systems)
        if self.nsystems == 0:
            raise DataError("DataLoader: no systems given")
        if isinstance(batch_size, Sequence) and not isinstance(batch_size, str):
            if len(batch_size) != self.nsystems:
                raise DataError(
                    f"batch_size: a list needs one entry per system ({self.nsystems}), "
                    f"got {len(batch_size)}"
                )
            sizes = list(batch_size)
        else:
            sizes = [batch_size] * self.nsystems
        self.batch_sizes = [
            parse_batch_size(b, s.natoms) for b, s in zip(sizes, self.systems, strict=True)
        ]
        if not isinstance(nall_multiple, numbers.Integral) or nall_multiple < 1:
            raise DataError(f"nall_multiple must be a positive int, got {nall_multiple!r}")
        self.nall_multiple = int(nall_multiple)
        self.pad_pow2 = bool(pad_pow2)
        self.rcut = rcut
        self.sel = sel
        if not isinstance(sel, numbers.Integral):
            ntypes = len(sel)
            for s in self.systems:
                if s.atype.size and int(s.atype.max()) >= ntypes:
                    raise DataError(
                        f"system {s.path}: type {int(s.atype.max())} but sel has {ntypes} "
                        "entries (one per type of the model's type_map)"
                    )
        nframes = np.array([s.nframes for s in self.systems], dtype=np.float64)
        weight = nframes / np.array(self.batch_sizes, dtype=np.float64)
        #: probability of drawing each system in :meth:`next_batch`
        self.probabilities = weight / weight.sum()
        self._cache = [_FrameCache(s.nframes) for s in self.systems]
        self._rng = np.random.default_rng(seed)
        self._order: list[np.ndarray | None] = [None] * self.nsystems
        self._pos = [0] * self.nsystems

    # --- neighbour data -------------------------------------------------------------------

    def _build(self, si: int, frames: np.ndarray) -> None:
        cache = self._cache[si]
        new = np.unique(frames[~cache.built[frames]])
        if new.size == 0:
            return
        s = self.systems[si]
        box = None if s.box is None else s.box[new]
        nd = build_neighbor_data(s.coord[new], box, s.atype, self.rcut, self.sel)
        nall = (nd.atype >= 0).sum(axis=1)
        index_dtype = np.int32 if nd.atype.shape[1] < 2**31 - 1 else np.int64
        for k, f in enumerate(new.tolist()):
            n = int(nall[k])
            cache.coord[f] = nd.coord[k, :n].copy()
            cache.mapping[f] = nd.mapping[k, :n].astype(index_dtype)
            cache.nlist[f] = nd.nlist[k].astype(index_dtype)
        cache.overflow[new] = nd.overflow
        cache.built[new] = True

    def _batch(self, si: int, frames: np.ndarray) -> Batch:
        frames = np.asarray(frames, dtype=np.int64)
        self._build(si, frames)
        s, cache = self.systems[si], self._cache[si]
        coords = [cache.coord[f] for f in frames.tolist()]
        sizes = np.array([c.shape[0] for c in coords], dtype=np.int64)  # type: ignore[union-attr]
        m = self.nall_multiple
        nall = int(-(-int(sizes.max()) // m) * m)
        if self.pad_pow2:  # few distinct shapes: one compilation serves many frames
            nall = max(nall, 1 << (int(sizes.max()) - 1).bit_length())
        nb = frames.size
        coord = np.zeros((nb, nall, 3), dtype=s.coord.dtype)
        mapping = np.zeros((nb, nall), dtype=np.int64)
        for k, f in enumerate(frames.tolist()):
            n = int(sizes[k])
            coord[k, :n] = coords[k]
            mapping[k, :n] = cache.mapping[f]
        real = np.arange(nall)[None, :] < sizes[:, None]
        atype = np.where(real, s.atype[mapping], -1).astype(np.int64)
        nlist = np.stack([cache.nlist[f] for f in frames.tolist()]).astype(np.int64)  # type: ignore[misc]
        nd = NeighborData(coord, atype, mapping, nlist, cache.overflow[frames].copy(), s.natoms)

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[frames]

        return Batch(
            system=s.path,
            frames=frames,
            nd=nd,
            natoms=s.natoms,
            energy=pick(s.energy),
            force=pick(s.force),
            virial=pick(s.virial),
            atom_ener=pick(s.atom_ener),
            box=pick(s.box),
        )

    # --- sampling -------------------------------------------------------------------------

    def _draw(self) -> tuple[int, np.ndarray]:
        """(system, frames) of the next training batch; advances the sampler."""
        si = int(self._rng.choice(self.nsystems, p=self.probabilities))
        n = self.systems[si].nframes
        bs = min(self.batch_sizes[si], n)
        order = self._order[si]
        if order is None or self._pos[si] + bs > n:
            order = self._rng.permutation(n)
            self._order[si] = order
            self._pos[si] = 0
        start = self._pos[si]
        self._pos[si] = start + bs
        return si, order[start:start + bs].copy()

    def next_batch(self) -> Batch:
        """The next training batch (random system, next frames of its shuffled pass)."""
        si, frames = self._draw()
        return self._batch(si, frames)

    def iter_batches(self, nbatches: int | None = None) -> Iterator[Batch]:
        """Every system in order, frames in order, in batches of the system's batch size
        (the last of a system may be shorter); at most ``nbatches`` batches if given."""
        count = 0
        for si, s in enumerate(self.systems):
            bs = self.batch_sizes[si]
            for start in range(0, s.nframes, bs):
                if nbatches is not None and count >= nbatches:
                    return
                yield self._batch(si, np.arange(start, min(start + bs, s.nframes)))
                count += 1

    # --- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The sampler's full state as plain JSON-serialisable data."""
        return {
            "version": _STATE_VERSION,
            "systems": [s.path for s in self.systems],
            "nframes": [s.nframes for s in self.systems],
            "batch_sizes": list(self.batch_sizes),
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "order": [None if o is None else o.tolist() for o in self._order],
            "pos": list(self._pos),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the following batches are then exactly those that
        followed when the state was saved. The systems must be the same."""
        try:
            version = state["version"]
            if version != _STATE_VERSION:
                raise DataError(
                    f"data loader state: version {version!r}, expected {_STATE_VERSION}"
                )
            for key, mine in (
                ("systems", [s.path for s in self.systems]),
                ("nframes", [s.nframes for s in self.systems]),
                ("batch_sizes", list(self.batch_sizes)),
            ):
                if list(state[key]) != mine:
                    raise DataError(
                        f"data loader state: '{key}' is {list(state[key])} but this loader "
                        f"has {mine}"
                    )
            orders: list[np.ndarray | None] = []
            for s, o in zip(self.systems, state["order"], strict=True):
                if o is None:
                    orders.append(None)
                    continue
                arr = np.asarray(o, dtype=np.int64)
                if arr.shape != (s.nframes,) or not np.array_equal(
                    np.sort(arr), np.arange(s.nframes)
                ):
                    raise DataError(
                        f"data loader state: the frame order of {s.path} is not a "
                        f"permutation of its {s.nframes} frames"
                    )
                orders.append(arr)
            pos = [int(p) for p in state["pos"]]
            if len(pos) != self.nsystems:
                raise DataError(
                    f"data loader state: 'pos' has {len(pos)} entries, expected {self.nsystems}"
                )
            rng = np.random.default_rng()
            rng.bit_generator.state = copy.deepcopy(state["rng"])
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"data loader state: malformed ({err!r})") from err
        self._rng = rng
        self._order = orders
        self._pos = pos
