"""Array-namespace helpers used by the reference model.

The model never imports a deep-learning framework. It asks its inputs for their namespace
(``namespace(x)``); backends whose framework has no Array-API namespace register their own
thin one with :func:`register_namespace`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat

from ..kernels import find_kernel

_CUSTOM: list[tuple[Callable[[Any], bool], Any]] = []


def register_namespace(is_array: Callable[[Any], bool], xp: Any) -> None:
    """Register a namespace ``xp`` for arrays for which ``is_array(x)`` is true."""
    _CUSTOM.append((is_array, xp))


def namespace(*arrays: Any) -> Any:
    """The array namespace of ``arrays`` (custom registrations first, then array-api-compat)."""
    for is_array, xp in _CUSTOM:
        if any(is_array(a) for a in arrays if a is not None):
            return xp
    return array_api_compat.array_namespace(*[a for a in arrays if a is not None])


def gather_neighbors(xp: Any, x_ext: Any, index: Any) -> Any:
    """Rows of ``x_ext`` picked per frame by ``index``.

    x_ext: (nf, nall, d); index: (nf, nloc, nnei) ints in [0, nall). Returns (nf, nloc, nnei, d).
    """
    nf, nall, d = x_ext.shape
    _, nloc, nnei = index.shape
    offset = xp.reshape(xp.arange(nf, dtype=index.dtype) * nall, (nf, 1, 1))
    flat = xp.reshape(index + offset, (nf * nloc * nnei,))
    rows = xp.take(xp.reshape(x_ext, (nf * nall, d)), flat, axis=0)
    return xp.reshape(rows, (nf, nloc, nnei, d))


def gather_types(xp: Any, atype_ext: Any, index: Any) -> Any:
    """Types of the atoms named by ``index``: atype_ext (nf, nall), index (nf, nloc, nnei)."""
    nf, nall = atype_ext.shape
    _, nloc, nnei = index.shape
    offset = xp.reshape(xp.arange(nf, dtype=index.dtype) * nall, (nf, 1, 1))
    flat = xp.reshape(index + offset, (nf * nloc * nnei,))
    return xp.reshape(xp.take(xp.reshape(atype_ext, (nf * nall,)), flat, axis=0), (nf, nloc, nnei))


def empty_slot_types(xp: Any, atype_ext: Any) -> Any:
    """The type an empty neighbour slot takes, per centre, broadcastable to (nf, nloc, 1): that
    of its frame's extended atom 0, as in DeePMD-kit (which gathers empty slots from atom 0).
    Where the model runs on a part of the system (``centre_chunks``: a chunk's atom 0 is one of
    its centres), the backend's ``empty_slot_types`` kernel gives the whole frame's type."""
    kernel = find_kernel("empty_slot_types", xp)
    empty = None if kernel is None else kernel()
    return atype_ext[:, 0:1, None] if empty is None else xp.astype(empty, atype_ext.dtype)


def neighbor_types(xp: Any, atype_ext: Any, nlist: Any) -> Any:
    """Types (nf, nloc, nnei) of the neighbours in ``nlist`` (nf, nloc, nnei), -1 = empty; an
    empty slot takes :func:`empty_slot_types` (type-embedding descriptors embed it)."""
    mask = nlist >= 0
    tj = gather_types(xp, atype_ext, xp.where(mask, nlist, xp.zeros_like(nlist)))
    return xp.where(mask, tj, xp.astype(empty_slot_types(xp, atype_ext), tj.dtype))


def softmax(xp: Any, x: Any, axis: int = -1) -> Any:
    """Numerically stable softmax along ``axis``."""
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def softmax_with_constants(xp: Any, x: Any, count: Any, value: float) -> Any:
    """Softmax along the last axis of ``x`` as if each row had ``count`` more entries equal to
    ``value`` (weights of the entries of ``x`` only); ``count`` may be a symbolic size."""
    top = xp.maximum(xp.max(x, axis=-1, keepdims=True), xp.full_like(x[..., :1], value))
    e = xp.exp(x - top)
    return e / (xp.sum(e, axis=-1, keepdims=True) + count * xp.exp(value - top))


def safe_norm(xp: Any, x: Any, axis: int = -1) -> Any:
    """Euclidean norm along ``axis`` (keepdims) whose gradient is finite (zero) at x = 0."""
    sq = xp.sum(x * x, axis=axis, keepdims=True)
    nonzero = sq > 0
    return xp.where(nonzero, xp.sqrt(xp.where(nonzero, sq, xp.ones_like(sq))), xp.zeros_like(sq))


def l2_normalize(xp: Any, x: Any, axis: int = -1) -> Any:
    """``x / |x|`` along ``axis``."""
    return x / safe_norm(xp, x, axis)


def to_numpy(x: Any) -> Any:
    """Convert any framework array to a NumPy array (for serialization)."""
    import numpy as np

    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy"):  # tensorflow, paddle
        return np.asarray(x.numpy())
    return np.asarray(x)
