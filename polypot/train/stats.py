"""Statistics taken from the training data before step 0 (what DeePMD-kit stores in a model).

* ``davg`` / ``dstd`` of the environment matrix, per centre type: radial column and the three
  angular columns pooled, over every neighbour slot (empty ones count as zeros); davg is
  [mean_r, 0, 0, 0], dstd [std_r, std_a, std_a, std_a]; a std below ``protection`` is raised to it.
* the per-type energy bias: least squares of frame energies on per-type atom counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import array_api_compat.numpy
import numpy as np


def env_mat_stats(descriptor: Any, batches: Iterable[Any], protection: float = 1e-2,
                  rcut: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(davg, dstd), each (ntypes, nnei, 4), from NumPy ``Batch`` es (``batch.nd``).

    ``rcut``: the statistics of a block with a smaller cutoff (DPA-2's repformer or three-body
    block), on the first ``nnei`` neighbours of the batches' distance-sorted lists within rcut."""
    from ..model.descriptor.dpa2 import sub_nlist

    ntypes, nnei = descriptor.ntypes, descriptor.nnei
    sums = np.zeros((ntypes, 2, 3))  # per type: [radial, angular] x [count, sum, sum of squares]
    for batch in batches:
        nd = batch.nd
        coord = np.asarray(nd.coord, np.float64)
        nlist = nd.nlist if rcut is None else sub_nlist(array_api_compat.numpy, coord,
                                                        np.asarray(nd.nlist), rcut, nnei)
        env, _, _ = descriptor.env_mat.raw(coord, nlist)
        centre = nd.atype[:, : nd.nloc]
        for t in range(ntypes):
            rows = env[centre == t]  # (n, nnei, 4)
            for col, part in enumerate((rows[..., :1], rows[..., 1:])):
                sums[t, col] += (part.size, part.sum(), np.square(part).sum())
    davg = np.zeros((ntypes, nnei, 4))
    dstd = np.ones((ntypes, nnei, 4))
    for t in range(ntypes):
        mean, std = [], []
        for count, total, squares in sums[t]:
            if count == 0:
                mean.append(0.0)
                std.append(0.1)
                continue
            m = total / count
            s = float(np.sqrt(max(squares / count - m * m, 0.0)))
            mean.append(m)
            std.append(max(s, protection))
        davg[t, :, 0] = mean[0]
        dstd[t, :, 0] = std[0]
        dstd[t, :, 1:] = std[1]
    if getattr(descriptor, "set_davg_zero", False):
        davg[:] = 0.0
    return davg, dstd


def type_counts(atype: np.ndarray, ntypes: int) -> np.ndarray:
    """Number of atoms of each type, (ntypes,)."""
    return np.bincount(np.asarray(atype), minlength=ntypes)[:ntypes]


def first_batches(model: Any, systems: Iterable[Any], batch_sizes: Iterable[Any], nbatch: int
                  ) -> list[Any]:
    """The first ``nbatch`` batches (in order, unpadded) of every system: the statistics'
    sample. ``batch_sizes``: one per system (int, "auto" or "auto:N")."""
    from ..data.loader import DataLoader

    batches: list[Any] = []
    for system, size in zip(systems, batch_sizes, strict=True):
        loader = DataLoader([system], size, model.rcut, model.sel, nall_multiple=1)
        batches.extend(loader.iter_batches(nbatch))
    return batches


def frame_type_counts(batches: Iterable[Any], ntypes: int) -> np.ndarray:
    """Atoms of each type in every frame of ``batches``, (nframes, ntypes)."""
    return np.concatenate([np.tile(type_counts(b.nd.atype[0, : b.nd.nloc], ntypes),
                                   (len(b.frames), 1)) for b in batches])


def energy_bias(counts: np.ndarray, energies: np.ndarray, rcond: float | None = None
                ) -> np.ndarray:
    """Per-type energies b (ntypes,) minimising |counts @ b - energies|^2.

    counts (nframes, ntypes) atoms of each type per frame; energies (nframes,) eV.
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    return np.linalg.lstsq(counts, energies, rcond=rcond)[0]
