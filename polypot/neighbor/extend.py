"""Extended system: local atoms followed by the periodic images that are neighbours."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .pairs import ShiftCode

# use a dense lookup table over all (atom, shift) images when it is at most this many
# times larger than the number of pairs, otherwise np.unique
_DENSE_FACTOR = 8


def extended_rank(j: np.ndarray, shift: np.ndarray, nloc: int, code: ShiftCode) -> np.ndarray:
    """Integer that orders neighbours exactly as their extended index will.

    j: (npair,) int64 local index of the neighbour; shift: (npair,) int64 shift codes.
    Returns (npair,) int64: ``j`` for a local neighbour (zero shift), otherwise
    ``nloc + j * nshift + shift``; images are numbered in this order.
    """
    rank = j * code.nshift
    rank += shift
    rank += nloc
    local = shift == code.zero
    rank[local] = j[local]
    return rank


def wrap_into_cell(coord: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``coord`` moved into the cell by whole cell vectors (DeePMD-kit's ``normalize_coord``),
    and those vectors, or ``coord`` itself and None where every atom is inside already. Atoms
    inside are left bit for bit; the result keeps ``coord``'s dtype.

    coord: (n, 3) positions (Å); cell: (3, 3) float64 lattice vectors as rows (Å).
    Returns (n, 3) positions and (n, 3) float64 offsets ``k @ cell`` (k = floor of the
    fractional coordinates) or None."""
    k = np.floor(coord.astype(np.float64) @ np.linalg.inv(cell))
    if not k.any():
        return coord, None
    offsets = k @ cell
    return (coord - offsets).astype(coord.dtype), offsets


class Extension(NamedTuple):
    """Extended atoms of one frame.

    coord: (nall, 3) extended coordinates (Å), first nloc are the input coordinates.
    atype: (nall,) int64 types. mapping: (nall,) int64 local atom of each extended atom.
    neighbor: (npair,) int64 extended index of each given neighbour.
    shift: (nall, 3) float64 integer cell shift S of each extended atom (zero for the first
    nloc): its coordinates are ``coord[mapping] + S @ cell``.
    """

    coord: np.ndarray
    atype: np.ndarray
    mapping: np.ndarray
    neighbor: np.ndarray
    shift: np.ndarray


def _number_images(rank: np.ndarray, nloc: int, nshift: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct image ranks (nimg,) sorted, and the image number (n,) of each ``rank``."""
    table_size = nloc * nshift
    if table_size <= _DENSE_FACTOR * rank.size + 4096:
        used = np.zeros(table_size, dtype=bool)
        used[rank - nloc] = True
        number = np.cumsum(used, dtype=np.int64)
        number -= 1
        return np.flatnonzero(used) + nloc, number[rank - nloc]
    uniq, inverse = np.unique(rank, return_inverse=True)
    return uniq, inverse.reshape(-1)


def extend_frame(
    coord: np.ndarray,
    cell: np.ndarray | None,
    atype: np.ndarray,
    rank: np.ndarray,
    code: ShiftCode,
) -> Extension:
    """Add one image per distinct (atom, shift != 0) among the given neighbours.

    coord: (nloc, 3) local coordinates (Å), returned unchanged as the first nloc rows.
    cell: (3, 3) float64 lattice rows (Å) or None (then there must be no image).
    atype: (nloc,) int64. rank: (npair,) int64 from :func:`extended_rank` for the
    neighbours kept in the neighbour list. Image coordinates are ``coord[j] + S @ cell``
    (not wrapped).
    """
    nloc = coord.shape[0]
    image = rank >= nloc
    neighbor = rank.copy()
    if not image.any():
        return Extension(coord.copy(), atype.copy(), np.arange(nloc, dtype=np.int64), neighbor,
                         np.zeros((nloc, 3)))
    if cell is None:
        raise RuntimeError("periodic image requested for an open-boundary frame")
    img_rank, number = _number_images(rank[image], nloc, code.nshift)
    neighbor[image] = nloc + number
    img_j, img_code = np.divmod(img_rank - nloc, code.nshift)
    img_shift = code.decode(img_code).astype(np.float64)
    img_coord = coord[img_j].astype(np.float64) + img_shift @ cell
    ext_coord = np.concatenate([coord, img_coord.astype(coord.dtype)], axis=0)
    mapping = np.concatenate([np.arange(nloc, dtype=np.int64), img_j])
    shift = np.concatenate([np.zeros((nloc, 3)), img_shift])
    return Extension(ext_coord, atype[mapping], mapping, neighbor, shift)
