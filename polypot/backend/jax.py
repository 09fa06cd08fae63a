"""JAX backend: ``jax.numpy`` (an Array-API namespace) with ``jax.vjp``; float64 enabled."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402  (after enabling float64)

from . import jax_kernels  # noqa: E402,F401  (registers the JAX kernels)
from .base import map_params  # noqa: E402
from .jax_kernels import first_order_coordinates  # noqa: E402

#: XLA options for the programs run on a CPU. By default XLA hands each matrix product to
#: YNNPACK fused with the elementwise work around it; the fused embedding-net products ran at a
#: third of the FLOP rate of a lone product (se_e2_a water, 1536 atoms, float64, 2 threads), and
#: with products alone in YNNPACK (``INDIVIDUAL_DOT``) the model call took 5-15% less time
#: (bench/README.md). Set POLYPOT_XLA_CPU_DEFAULTS=1 to compile with XLA's defaults.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). XLA's compilation of a model program frees about as much memory as the program
    keeps, and glibc holds on to it: compressed se_e2_a water, 1536 atoms, float64: 420 MB of
    resident memory after the first call, 90 MB after a trim (bench/README.md)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _CompiledPerShape:
    """``jitted``, compiled ahead of its first call for each new set of argument shapes and
    dtypes, with the free heap released after each compilation (:func:`_release_free_heap`):
    the memory the compiler left behind then does not add to the program's buffers in the
    first run's peak. The calls go through ``jitted``, which reuses that compilation."""

    def __init__(self, jitted: Any) -> None:
        self._jitted = jitted
        self._seen: set[Any] = set()
        self._temp: dict[Any, int | None] = {}

    def lower(self, *args: Any) -> Any:
        return self._jitted.lower(*args)

    def _compile(self, args: tuple) -> Any:
        """The cache key of ``args`` (compiled ahead if new), or None for arguments that are
        not all arrays (left to ``jax.jit``'s own cache)."""
        leaves, tree = jax.tree.flatten(args)
        if not all(isinstance(x, (np.ndarray, jax.Array)) for x in leaves):
            return None
        key = (tree, *((x.shape, x.dtype) for x in leaves))
        if key not in self._seen:
            compiled = self._jitted.lower(*args).compile()
            try:
                stats = compiled.memory_analysis()
                self._temp[key] = None if stats is None else int(stats.temp_size_in_bytes)
            except Exception:  # noqa: BLE001  (a backend or version without the analysis)
                self._temp[key] = None
            del compiled
            _release_free_heap()
            self._seen.add(key)
        return key

    def temp_bytes(self, *args: Any) -> int | None:
        """Bytes of the temporary buffer XLA allocates for each call on arguments of these
        shapes (compiled ahead, as a call would), or None where XLA does not report it."""
        return self._temp.get(self._compile(args))

    def forget(self) -> None:
        """Drop every compiled shape and release the free heap. Each executable holds the
        program's constants (compressed se_e2_a water: about 90 MB per shape)."""
        clear = getattr(self._jitted, "clear_cache", None)  # not in every jax version
        if clear is not None:
            clear()
        self._seen.clear()
        self._temp.clear()
        _release_free_heap()

    def __call__(self, *args: Any) -> Any:
        self._compile(args)
        return self._jitted(*args)


def cpu_jit(fn: Callable[..., Any]) -> Any:
    """``jax.jit(fn)`` compiling with :data:`CPU_COMPILER_OPTIONS` when JAX runs on the CPU
    and this jax / jaxlib accepts them (one tiny compile tries them), else XLA's defaults.
    For the inference programs (frozen ``.hlo`` files, ``compile_lower``): on the CPU each
    new set of input shapes compiles ahead of its first call (:class:`_CompiledPerShape`)."""
    options = None
    on_cpu = jax.default_backend() == "cpu"
    if on_cpu and os.environ.get("POLYPOT_XLA_CPU_DEFAULTS", "") in ("", "0"):
        try:
            jax.jit(jnp.negative, compiler_options=CPU_COMPILER_OPTIONS).lower(
                jnp.zeros(1)).compile()
            options = CPU_COMPILER_OPTIONS
        except (TypeError, jax.errors.JaxRuntimeError):  # an option or keyword unknown here
            pass
    jitted = jax.jit(fn, compiler_options=options)
    return _CompiledPerShape(jitted) if on_cpu else jitted


class JaxBackend:
    name = "jax"
    has_autodiff = True
    compiles_steps = True  # compile_step traces once per input shape

    def namespace(self) -> Any:
        return jnp

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return jnp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def convert_params(self, params: Any) -> Any:
        return map_params(params, jnp.asarray)

    def scatter_sum(self, data: Any, index: Any, size: int) -> Any:
        nf = data.shape[0]
        out = jnp.zeros((nf, size, *data.shape[2:]), dtype=data.dtype)
        frames = jnp.arange(nf)[:, None]
        return out.at[frames, index].add(data)

    def value_and_pullback(self, fn: Callable[[Any], Any], x: Any
                           ) -> tuple[Any, Callable[[Any], Any]]:
        y, pull = jax.vjp(fn, x)
        return y, lambda cotangent: pull(cotangent)[0]

    def value_and_grad(self, fn: Callable[[Any], tuple[Any, dict]], params: dict
                       ) -> tuple[Any, dict, dict]:
        """(loss, aux, grads) of ``fn: params -> (scalar loss, aux dict)``."""
        (loss, aux), grads = jax.value_and_grad(fn, has_aux=True)(params)
        return loss, aux, grads

    def compile_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``jax.jit`` of a training step (one compilation per batch shape)."""
        return jax.jit(step)

    def hessian(self, fn: Callable[[Any], Any], x: Any) -> Any:
        """Per-frame Hessians (nf, 3n, 3n) of ``fn: x (nf, n, 3) -> energies (nf,)``.

        Frames are independent, so one tangent e_(a,k) shared by all frames gives column (a, k)
        of every frame's Hessian: 3n forward-over-reverse products, vectorised with vmap."""
        nf, n, _ = x.shape
        grad = jax.grad(lambda y: jnp.sum(fn(y)))
        basis = jnp.eye(3 * n, dtype=x.dtype).reshape(3 * n, 1, n, 3)

        def columns(y: Any) -> Any:
            tangent = lambda t: jax.jvp(grad, (y,), (jnp.broadcast_to(t, y.shape),))[1]  # noqa: E731
            return jax.vmap(tangent)(basis)

        # columns[c, f, a, k] = H_f[(a, k), c]
        return jnp.transpose(columns(x).reshape(3 * n, nf, 3 * n), (1, 2, 0))

    def compile_hessian(self, model: Any, params: Any) -> Callable[[Any, Any, Any, Any], Any]:
        """``f(coord_ext, atype_ext, nlist, mapping) -> (nf, 3 nloc, 3 nloc)`` under jax.jit
        (compiled once per shape, parameters passed as a pytree)."""
        from ..model.derivatives import hessian

        def fn(p: Any, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> Any:
            def atomic_energy(x: Any) -> Any:
                return model.atomic_energy(p, x, atype_ext, nlist, mapping)

            return hessian(self, atomic_energy, coord_ext, mapping, nlist.shape[1])

        jitted = cpu_jit(fn)
        p = self.convert_params(params)
        return lambda *arrays: jitted(p, *arrays)

    # ---- compiled lower interface ----------------------------------------------------------------
    def compile_lower(self, model: Any, params: Any, atomic: bool = False
                      ) -> Callable[[Any, Any, Any, Any], dict]:
        """The lower evaluation of ``model`` under ``jax.jit``.

        Returns ``f(coord_ext, atype_ext, nlist, mapping) -> dict`` of jax arrays: energy
        (nf, 1) eV, force (nf, nloc, 3) eV/Å, virial (nf, 9) eV, atom_energy (nf, nloc, 1) and,
        with ``atomic``, atom_virial (nf, nloc, 9). Inputs: coord_ext (nf, nall, 3) Å,
        atype_ext (nf, nall) (-1 = padding), nlist (nf, nloc, nnei) (-1 = empty), mapping
        (nf, nall); NumPy or jax arrays. The parameters are converted once and passed to the
        compiled function as a pytree argument; each new (nf, nall, nloc) compiles once
        (on the CPU with :data:`CPU_COMPILER_OPTIONS`).
        """
        jitted = cpu_jit(lower_function(model, atomic))
        p = self.convert_params(params)

        def evaluate(coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
            return jitted(p, coord_ext, atype_ext, nlist, mapping)

        return evaluate


def lower_function(model: Any, atomic: bool = False, extended: bool = False
                   ) -> Callable[..., dict]:
    """Pure ``fn(params, coord_ext, atype_ext, nlist, mapping) -> dict`` of the lower interface
    (shapes as in :meth:`JaxBackend.compile_lower`), traceable by ``jax.jit`` and
    ``jax.export`` (nloc is read from ``nlist.shape[1]``, so it may be symbolic). Coordinates
    are cast to the model precision first, so float32 models give float32 results.
    ``extended``: the dict also holds extended_force (nf, nall, 3), unfolded (``derive``)."""
    from ..model.derivatives import derive  # lazy: loading a frozen file needs no model code
    from ..model.precision import to_dtype

    backend = JaxBackend()
    dtype = to_dtype(model.precision)

    def fn(params: Any, coord_ext: Any, atype_ext: Any, nlist: Any, mapping: Any) -> dict:
        coord_ext = jnp.asarray(coord_ext, dtype=dtype)  # derivatives in the model precision

        def atomic_energy(x: Any) -> Any:
            return model.atomic_energy(params, x, atype_ext, nlist, mapping)

        with first_order_coordinates():  # forces and virials only: one pass per chunk
            return derive(backend, atomic_energy, coord_ext, mapping, nlist.shape[1],
                          atomic=atomic, extended=extended)

    return fn


# ---- frozen files (.hlo) -----------------------------------------------------------------------
def freeze(model: Any, params: Any, path: str | os.PathLike,
           model_def_script: dict | None = None) -> None:
    """Write ``model`` as a ``.hlo`` frozen file (see :mod:`polypot.backend.jax_frozen`)."""
    from .jax_frozen import freeze as _freeze

    _freeze(model, params, path, model_def_script=model_def_script)


def load_frozen(path: str | os.PathLike) -> Any:
    """Load a ``.hlo`` file as a ``FrozenModel``; imports no ``polypot.model`` code."""
    from .jax_frozen import load_frozen as _load

    return _load(path)
