"""What a backend supplies: an array namespace, parameter conversion, and (optionally) autodiff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Backend(Protocol):
    """A thin adapter around one array framework."""

    name: str
    has_autodiff: bool

    def namespace(self) -> Any:
        """The Array-API namespace used by ``polypot.model`` for this framework's arrays."""

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Convert a NumPy array to this framework's array."""

    def to_numpy(self, x: Any) -> Any:
        """Convert this framework's array to NumPy."""

    def convert_params(self, params: Any) -> Any:
        """Map a parameter pytree of NumPy arrays to this framework's arrays."""

    def scatter_sum(self, data: Any, index: Any, size: int) -> Any:
        """out[f, index[f, a]] += data[f, a] for data (nf, n, k), index (nf, n) -> (nf, size, k)."""

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        """(y = fn(x), pullback): pullback(c) = d sum(c * y) / dx, a vector-Jacobian product."""


class NoAutodiffError(RuntimeError):
    """Raised when forces or virials are asked of a backend without automatic differentiation."""


def map_params(params: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to every array leaf of a nested dict/list parameter tree (None stays None)."""
    if isinstance(params, dict):
        return {k: map_params(v, fn) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(map_params(v, fn) for v in params)
    if params is None:
        return None
    return fn(params)


# ---- frozen files ------------------------------------------------------------------------------
# A frozen file holds a compiled program of the *lower* interface, runnable with only its
# framework installed (no import of ``polypot.model``):
#
#   inputs   coord_ext (nf, nall, 3) float (model precision), atype_ext (nf, nall) int64
#            (-1 = padding atom), nlist (nf, nloc, nnei) int64 (-1 = empty), mapping (nf, nall)
#            int64
#   outputs  energy (nf, 1), force (nf, nloc, 3), virial (nf, 9), atom_energy (nf, nloc, 1)
#            and, from the "atomic" entry point, atom_virial (nf, nloc, 9)
#
# plus metadata (see ``frozen_metadata``) and the neutral model dictionary, so that
# ``convert-backend`` can turn any frozen file back into ``.dp``.


class FrozenModel(Protocol):
    """A loaded frozen file."""

    metadata: dict  # frozen_metadata(...) as written

    def run(self, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
            atomic: bool = False) -> dict:
        """NumPy inputs -> dict of NumPy outputs (keys as above)."""

    def neutral_dict(self) -> dict:
        """The neutral model dictionary (as ``polypot.io.neutral.load_neutral`` returns)."""


def frozen_metadata(model: Any, backend: str, model_def_script: dict | None = None) -> dict:
    """Metadata every frozen file carries (JSON-serialisable)."""
    from .. import __version__

    sel = model.sel
    return {
        "software": "polypot",
        "polypot_version": __version__,
        "backend": backend,
        "type_map": list(model.type_map),
        "rcut": float(model.rcut),
        "sel": sel if isinstance(sel, int) else list(sel),
        "mixed_types": bool(model.mixed_types),
        "precision": model.precision,
        "descriptor": model.descriptor_type,
        "model_def_script": model_def_script or {},
    }


def check_lower_inputs(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any,
                       coord_dtype: Any, nnei: int) -> tuple[Any, Any, Any, Any]:
    """Contiguous NumPy copies (coord in ``coord_dtype``, the rest int64) of a frozen program's
    inputs, after checking their shapes against each other and against ``nnei``."""
    import numpy as np

    coord = np.ascontiguousarray(coord_ext, dtype=coord_dtype)
    atype = np.ascontiguousarray(atype_ext, dtype=np.int64)
    nl = np.ascontiguousarray(nlist, dtype=np.int64)
    mp = np.ascontiguousarray(mapping, dtype=np.int64)
    if coord.ndim != 3 or coord.shape[2] != 3 or atype.shape != coord.shape[:2] \
            or mp.shape != atype.shape or nl.ndim != 3 or nl.shape[0] != coord.shape[0]:
        raise ValueError(
            f"expected coord_ext (nf, nall, 3), atype_ext and mapping (nf, nall), nlist "
            f"(nf, nloc, nnei); got {coord.shape}, {atype.shape}, {mp.shape}, {nl.shape}"
        )
    if nl.shape[2] != nnei:
        raise ValueError(f"nlist has {nl.shape[2]} neighbour slots; this model was frozen "
                         f"with nnei = sum(sel) = {nnei}")
    if not 0 < nl.shape[1] <= coord.shape[1]:
        raise ValueError(f"need 0 < nloc <= nall, got nloc={nl.shape[1]}, nall={coord.shape[1]}")
    return coord, atype, nl, mp
