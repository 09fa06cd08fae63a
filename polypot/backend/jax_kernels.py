"""JAX kernels for hot model functions (registered in :mod:`polypot.kernels`).

``tabulated_contract`` (and ``tabulated_contract_typed``, strip-mode DPA-1): sum_j G(s_j)^T R_j
of a compressed embedding (see
:meth:`polypot.model.compress.Tabulation.contract`). The reference gathers the six quintic
coefficients of every (atom, neighbour, channel) into one array (nnei * 6 * width per atom:
about 1 GB for 1536 water atoms in float64) and differentiates through it. Here the atoms are
processed in chunks of about ``CHUNK_PAIRS`` (atom, neighbour) pairs with ``lax.map``, so G and
dG/ds of a chunk stay in cache; the gathers fuse into the polynomial, and the derivative is
written by hand (``custom_vjp``) from G and dG/ds recomputed chunk by chunk:

    dL/dR_j = G_j h,   dL/ds_j = sum_c R_jc (dG_j h)_c,   h = dL/d(G^T R) (width, 4).

The tables are constants of inference: no cotangent flows to them (compressed models are not
trained; ``--init-model``/``--finetune`` refuse them). Second derivatives (Hessians) work:
the backward pass is ordinary JAX code.

``centre_chunks`` (atom-local models, and DPA-2's repinit stage) and ``row_chunks`` (each DPA-2
repformer layer) evaluate the model chunk by chunk of centre atoms, each chunk rematerialised in
the backward pass (``jax.checkpoint``; force programs instead take each chunk's value and
gradient in one pass, one loop per centre type): peak memory follows the chunk, not the system,
and the working set of a chunk stays in cache. Chunk sizes, in (centre, neighbour) pairs:
``POLYPOT_CENTRE_CHUNK_PAIRS`` (default 4096; ``POLYPOT_ATTN_CHUNK_PAIRS``, default 1024, for
DPA-1) and ``POLYPOT_ROW_CHUNK_PAIRS`` (default 2048), and
for the table kernels ``POLYPOT_TABLE_CHUNK_PAIRS`` (default 2048, with
``POLYPOT_TABLE_CHUNKS_PER_STEP`` chunks per loop step, default 4);
smaller values lower the memory further (read when this module is imported; they shape the
program when a model is traced, i.e. at freeze time for ``.hlo`` files). Systems of known size
up to ``WHOLE_SYSTEM_PAIRS`` stay whole.

All of this is for CPUs. A program compiled for another platform (a GPU) evaluates the whole
system at once instead (``_on_cpu``); a frozen ``.hlo`` holds both and the platform picks.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from ..kernels import register_kernel

#: (atom, neighbour) pairs per chunk: G and dG/ds of a chunk (pairs x width doubles each) fit
#: in the L2/L3 caches of a CPU. Override with POLYPOT_TABLE_CHUNK_PAIRS
CHUNK_PAIRS = int(os.environ.get("POLYPOT_TABLE_CHUNK_PAIRS", "2048"))
#: (centre, neighbour) pairs per chunk of ``centre_chunks`` (whole descriptor + fitting net per
#: chunk; measured on 2 cores: 2048-8192 all beat the unchunked program, 16384+ are slower).
#: Override with POLYPOT_CENTRE_CHUNK_PAIRS
CENTRE_CHUNK_PAIRS = int(os.environ.get("POLYPOT_CENTRE_CHUNK_PAIRS", "4096"))
#: ``centre_chunks``' pairs per chunk for DPA-1 (se_atten) descriptors, with or without
#: attention layers (2 Zen 5 cores, 1536 water atoms, ms per call: L=2 4096 pairs 1407.7, 2048
#: 1218.9, 1024 1085.9, 512 1062.7; L=0 4096 119.9, 2048 114.1, 1024 105.9, and at 12288 atoms
#: 941.6 against 869.9 for 1024). POLYPOT_ATTN_CHUNK_PAIRS
ATTN_CHUNK_PAIRS = int(os.environ.get("POLYPOT_ATTN_CHUNK_PAIRS", "1024"))
#: (centre, neighbour) pairs per chunk of a message-passing layer (``row_chunks``); its peak
#: memory is about this times the layer's per-pair intermediates, whatever the system size
#: (DPA-2 medium, 1536 atoms, 2 cores: 1024-2048 pairs 5.9 s/step, 8192 6.8 s, 32768 8.7 s).
#: Override with POLYPOT_ROW_CHUNK_PAIRS (smaller: less memory)
ROW_CHUNK_PAIRS = int(os.environ.get("POLYPOT_ROW_CHUNK_PAIRS", "2048"))
#: chunk on GPUs too (less memory, slower; see ``_on_cpu``): POLYPOT_GPU_CHUNKS=1
GPU_CHUNKS = os.environ.get("POLYPOT_GPU_CHUNKS", "") not in ("", "0")
#: systems of known size (training batches, models called directly) with at most this many
#: (centre, neighbour) pairs are evaluated whole by ``centre_chunks`` and ``row_chunks``:
#: rematerialised chunks pay for large systems, but second derivatives (the force loss of
#: training) recompute every chunk again (water se_e2_a, batch 1 of 192 atoms: 0.31 s/step
#: whole, 0.48 chunked). Frozen programs (symbolic sizes) always chunk.
WHOLE_SYSTEM_PAIRS = 131072
NCOEF = 6
#: chunks per loop step of the table kernels (``_chunked``'s ``par``): independent chunks the
#: CPU runtime may run at once (compressed models, 1536 atoms, 2 cores: 1 -> 4 took se_e2_a
#: 248 -> 228 ms and DPA-1 L0 229 -> 205 ms; bench/README.md). Override with
#: POLYPOT_TABLE_CHUNKS_PER_STEP
TABLE_PAR = int(os.environ.get("POLYPOT_TABLE_CHUNKS_PER_STEP", "4"))


def _chunked(fn: Any, ch: int, *arrays: Any, whole: Any = None, par: int = 1) -> Any:
    """``fn`` over chunks of the leading (row) axis of ``arrays``, outputs concatenated.

    Rows are padded with zeros up to whole chunks (the count may be symbolic under
    ``jax.export``: k * par * ch - n is a whole number of steps for the shape checker).
    ``par``: chunks per loop step, each traced as its own call of ``fn``: independent
    operations that XLA's CPU runtime may run on different threads at once.
    ``whole``: a function like ``fn`` that takes any number of rows; off CPUs it then takes
    all rows at once instead (:func:`_on_cpu`), and so it does everywhere for a known number
    of rows that fits in one chunk: padding a few rows of constants (the rows of a narrowed
    list's left-out slots) up to ``par`` chunks made XLA fold them into large constants
    (compressed se_e2_a water: 8 MB in each executable, and about 130 MB more memory at
    compilation)."""
    n_rows = arrays[0].shape[0]
    if whole is not None and isinstance(n_rows, int) and n_rows <= ch:
        return whole(*arrays)

    def mapped() -> Any:
        n = arrays[0].shape[0]
        k = (n + par * ch - 1) // (par * ch)
        # no axis of length 1 for one chunk per step: XLA copied the arrays to relayout it
        lead = (k,) if par == 1 else (k, par)
        padded = [jnp.concatenate([a, jnp.zeros((k * par * ch - n, *a.shape[1:]), a.dtype)])
                  .reshape(*lead, ch, *a.shape[1:]) for a in arrays]

        def step(xs: Any) -> Any:
            if par == 1:
                return fn(*xs)
            outs = [fn(*(x[i] for x in xs)) for i in range(par)]
            return jax.tree.map(lambda *o: jnp.stack(o), *outs)

        out = jax.lax.map(step, padded)
        return jax.tree.map(lambda o: o.reshape(k * par * ch, *o.shape[len(lead) + 1:])[:n], out)

    if whole is None:
        return mapped()
    return _on_cpu(mapped, lambda: whole(*arrays))


#: the platform whose programs are chunked (tests set another to run the other branch on CPU)
_CHUNK_PLATFORM = "cpu"


def _on_cpu(chunked: Any, whole: Any) -> Any:
    """``chunked()`` in programs compiled for a CPU, ``whole()`` in those compiled for another
    platform (a GPU), unless POLYPOT_GPU_CHUNKS is set.

    Chunks sized for CPU caches make a GPU run hundreds of small ``lax.map`` steps one after
    another: DPA-1 L=0, float64, 12288 atoms, one model call on an H200 took 54 ms in the
    default chunks and 15 ms whole (``bench/gpu.sh``). Both functions are traced, and the
    platform picks one when the program is compiled (``jax.lax.platform_dependent``), so a
    frozen ``.hlo`` (lowered for CPU and CUDA) holds both."""
    if GPU_CHUNKS:
        return chunked()
    return jax.lax.platform_dependent(**{_CHUNK_PLATFORM: chunked}, default=whole)


def _whole(*dims: Any) -> bool:
    """True if the sizes ``dims`` are known and their product is at most WHOLE_SYSTEM_PAIRS."""
    n = 1
    for d in dims:
        if not isinstance(d, int):
            return False
        n *= d
    return n <= WHOLE_SYSTEM_PAIRS


#: neighbours per row assumed by ``_per_chunk`` when nnei is symbolic (narrowed lists)
SYMBOLIC_NNEI = 128


def _per_chunk(nnei: Any, pairs: int = CHUNK_PAIRS) -> int:
    """Rows (atoms) per chunk for about ``pairs`` (atom, neighbour) pairs."""
    if not isinstance(nnei, int):
        nnei = SYMBOLIC_NNEI
    return max(1, pairs // max(nnei, 1))


def _interval(spec: Any, s: Any, index: Any) -> tuple[Any, Any, Any]:
    """``spec.interval`` (table row, t = s - x_l) and dt/ds: 1 inside the table's range, 0 where
    G is held constant."""
    row, t = spec.interval(s, index)
    inside = ((s > spec.lower) & (s < spec.top)).astype(s.dtype)
    return row, t, inside


def _coefficients(spec: Any, table: Any) -> list[Any]:
    """The table as six (ntab * nint, width) arrays, one per power of t."""
    flat = table.reshape(spec.ntab * spec.nint, NCOEF, spec.width)
    return [flat[:, p, :] for p in range(NCOEF)]


def _values(spec: Any, coef: list[Any], s: Any, index: Any, slope: bool) -> tuple[Any, ...]:
    """G (rows, nnei, width) and, with ``slope``, dG/ds and the in-range mask (rows, nnei)."""
    row, t, inside = _interval(spec, s, index)
    c = [jnp.take(cp, row, axis=0) for cp in coef]
    tt = t[..., None]
    g = c[0] + tt * (c[1] + tt * (c[2] + tt * (c[3] + tt * (c[4] + tt * c[5]))))
    if not slope:
        return (g,)
    dg = c[1] + tt * (2.0 * c[2] + tt * (3.0 * c[3] + tt * (4.0 * c[4] + tt * 5.0 * c[5])))
    return g, dg, inside


def _transposed_rows(x: Any) -> Any:
    """(rows, a, b) -> (rows, b, a). The forward kernels take R^T (rows, 4, nnei) and give
    (R^T G) (rows, 4, width), both transposed outside the chunk loop: XLA's CPU runtime then
    calls YNNPACK for the chunk's product, not the slower generic batched dot it picked for
    G^T R, whose G is contracted over its middle axis (16 rows x 104 neighbours x 100
    columns, 96 chunks: 50 -> 31 ms; bench/README.md)."""
    return jnp.swapaxes(x, 1, 2)


def _contract_value(spec: Any, table: Any, s: Any, rr: Any, index: Any) -> Any:
    """sum_j G_j^T R_j (rows, width, 4) of s (rows, nnei), rr (rows, nnei, 4)."""
    coef = _coefficients(spec, table)

    def chunk(s_: Any, rrt_: Any, index_: Any) -> Any:
        (g,) = _values(spec, coef, s_, index_, slope=False)
        return jnp.matmul(rrt_, g)  # R^T G (rows, 4, width): see _transposed_rows

    return _transposed_rows(_chunked(chunk, _per_chunk(s.shape[-1]), s,
                                     _transposed_rows(rr), index, whole=chunk, par=TABLE_PAR))


# the forward rule calls the plain function, not the custom_vjp one: an outer JVP (the Hessian's
# forward-over-reverse, training's force loss) then differentiates ordinary JAX code
_contract = functools.partial(jax.custom_vjp, nondiff_argnums=(0,))(_contract_value)


def _contract_fwd(spec: Any, table: Any, s: Any, rr: Any, index: Any) -> tuple[Any, Any]:
    return _contract_value(spec, table, s, rr, index), (table, s, rr, index)


def _contract_bwd(spec: Any, res: Any, h: Any) -> tuple[Any, ...]:
    table, s, rr, index = res
    coef = _coefficients(spec, table)

    def chunk(s_: Any, rr_: Any, index_: Any, h_: Any) -> tuple[Any, Any]:
        g, dg, inside = _values(spec, coef, s_, index_, slope=True)
        both = jnp.einsum("aknm,amc->aknc", jnp.stack([g, dg], axis=1), h_)
        return jnp.sum(both[:, 1] * rr_, axis=-1) * inside, both[:, 0]

    ds, drr = _chunked(chunk, _per_chunk(s.shape[-1]), s, rr, index, h, whole=chunk,
                       par=TABLE_PAR)
    return None, ds, drr, None


_contract.defvjp(_contract_fwd, _contract_bwd)


def _type_rows(ttab: Any, ti: Any) -> Any:
    """The rows ``ttab[ti]`` (..., width) as a product with one-hot rows of ``ti``: exact (each
    sum has one non-zero term), and a dense product where XLA's row gather inside the backward
    chunk's fusions made it 2.2x slower (DPA-1 strip, 1536 atoms, bench/README.md)."""
    return jax.nn.one_hot(ti, ttab.shape[0], dtype=ttab.dtype) @ ttab


def _typed_value(cfg: tuple[Any, bool], table: Any, ttab: Any, s: Any, rr: Any, tindex: Any,
                 w: Any) -> Any:
    """sum_j G_j^T R_j with G_j = g(s_j) (1 + w_j T[tindex_j]) (rows, width, 4);
    cfg = (spec, weighted): without weights w is ignored (1)."""
    spec, weighted = cfg
    coef = _coefficients(spec, table)

    def chunk(s_: Any, rrt_: Any, ti: Any, w_: Any) -> Any:
        (g,) = _values(spec, coef, s_, jnp.zeros_like(ti), slope=False)
        t = jnp.take(ttab, ti, axis=0)  # here the gather beat _type_rows (53 against 63 ms)
        gg = g * (1.0 + (w_[..., None] * t if weighted else t))
        return jnp.matmul(rrt_, gg)  # R^T G (rows, 4, width): see _transposed_rows

    return _transposed_rows(_chunked(chunk, _per_chunk(s.shape[-1]), s, _transposed_rows(rr),
                                     tindex, w, whole=chunk, par=TABLE_PAR))


_typed = functools.partial(jax.custom_vjp, nondiff_argnums=(0,))(_typed_value)


def _typed_fwd(cfg: tuple[Any, bool], table: Any, ttab: Any, s: Any, rr: Any, tindex: Any,
               w: Any) -> tuple[Any, Any]:
    return _typed_value(cfg, table, ttab, s, rr, tindex, w), (table, ttab, s, rr, tindex, w)


def _typed_bwd(cfg: tuple[Any, bool], res: Any, h: Any) -> tuple[Any, ...]:
    spec, weighted = cfg
    table, ttab, s, rr, tindex, w = res
    coef = _coefficients(spec, table)

    def chunk(s_: Any, rr_: Any, ti: Any, w_: Any, h_: Any) -> tuple[Any, ...]:
        g, dg, inside = _values(spec, coef, s_, jnp.zeros_like(ti), slope=True)
        t = _type_rows(ttab, ti)
        scale = 1.0 + (w_[..., None] * t if weighted else t)
        # rows of dL/dR_j and the s-slope (and the w-slope), each contracted with h; XLA runs
        # the two-row stack about 3x faster than the three-row one, so w only when needed
        rows = [g * scale, dg * scale] + ([g * t] if weighted else [])
        out = jnp.einsum("aknm,amc->aknc", jnp.stack(rows, axis=1), h_)
        ds = jnp.sum(out[:, 1] * rr_, axis=-1) * inside
        dw = jnp.sum(out[:, 2] * rr_, axis=-1) if weighted else jnp.zeros_like(ds)
        return ds, out[:, 0], dw

    ds, drr, dw = _chunked(chunk, _per_chunk(s.shape[-1]), s, rr, tindex, w, h, whole=chunk,
                           par=TABLE_PAR)
    return None, None, ds, drr, None, dw if weighted else None


_typed.defvjp(_typed_fwd, _typed_bwd)


def _rows(s: Any, rr: Any) -> tuple[tuple[int, ...], Any, Any]:
    lead, nnei = tuple(s.shape[:-1]), s.shape[-1]
    return lead, s.reshape(-1, nnei), rr.reshape(-1, nnei, rr.shape[-1]).astype(s.dtype)


def tabulated_contract(spec: Any, table: Any, s: Any, rr: Any, index: Any = None) -> Any:
    """sum_j G(s_j)^T R_j (..., width, 4): s (..., nnei), rr (..., nnei, 4), index (..., nnei)
    table numbers or None (table 0); table (ntab, nint, 6 * width)."""
    lead, s2, rr2 = _rows(s, rr)
    if index is None:
        idx2 = jnp.zeros(s2.shape, jnp.int32)
    else:
        idx2 = jnp.broadcast_to(index, s.shape).reshape(s2.shape)
    out = _contract(spec, table.astype(s.dtype), s2, rr2, idx2)
    return out.reshape(*lead, spec.width, rr.shape[-1])


def tabulated_contract_typed(spec: Any, table: Any, s: Any, rr: Any, type_table: Any,
                             type_index: Any, weight: Any = None) -> Any:
    """sum_j G_j^T R_j (..., width, 4), G_j = g(s_j) (1 + w_j T[type_index_j]) (see
    ``Tabulation.contract_typed``); weight None is 1."""
    lead, s2, rr2 = _rows(s, rr)
    ti = jnp.broadcast_to(type_index, s.shape).reshape(s2.shape)
    w = jnp.ones_like(s2) if weight is None else weight.reshape(s2.shape).astype(s.dtype)
    out = _typed((spec, weight is not None), table.astype(s.dtype), type_table.astype(s.dtype),
                 s2, rr2, ti, w)
    return out.reshape(*lead, spec.width, rr.shape[-1])


register_kernel("tabulated_contract", "jax.numpy", tabulated_contract)
register_kernel("tabulated_contract_typed", "jax.numpy", tabulated_contract_typed)


# ---- atom-local models in chunks of centre atoms -----------------------------------------------
#: non-empty while tracing a program that differentiates the energy once, with respect to the
#: coordinates only (the inference program of :func:`polypot.backend.jax.lower_function`)
_FIRST_ORDER: list[bool] = []


@contextlib.contextmanager
def first_order_coordinates() -> Iterator[None]:
    """Trace a program in which the energy is differentiated once, by the coordinates only
    (forces, virials): ``centre_chunks`` then gives each chunk's energies together with their
    gradient in one pass (see there). Second derivatives or parameter gradients of a program
    traced inside are wrong: never use it for Hessians or training."""
    _FIRST_ORDER.append(True)
    try:
        yield
    finally:
        _FIRST_ORDER.pop()


def centre_chunks(fn: Any, coord_ext: Any, atype_ext: Any, nlist: Any, ntypes: int,
                  energy: bool = False, max_nnei: int | None = None,
                  attention: bool = False) -> Any:
    """``fn(coord, atype, nlist) -> (1, n, k)`` over chunks of centre atoms, (nf, nloc, k).

    For models whose atomic energy depends only on the atom's own neighbours (every descriptor
    but DPA-2's). Each chunk of about ``CENTRE_CHUNK_PAIRS`` (centre, neighbour) pairs becomes a
    small extended system, centres first then their neighbours' copies, with the neighbour list
    renumbered into it, so ``fn`` is the model's own code; the chunk is rematerialised in the
    backward pass (``jax.checkpoint``), so no per-pair intermediate of the whole system is
    stored and memory stays proportional to the chunk, not to the system.

    The centres are grouped by type (``ntypes`` types, 0 <= atype), each type starting a new
    chunk, so all centres of a chunk share one type and per-type networks run as one dense
    product per chunk (``uniform_type_params``); the rows that pad a type's last chunk are
    centres of that type with empty neighbour lists.

    ``energy``: ``fn`` returns one energy per centre (k = 1). Inside
    :func:`first_order_coordinates` each chunk then computes its energies e and their gradient
    g = d(sum e)/dx of its coordinate rows in one forward pass and returns the linearisation
    e + sum_rows g . (x - x0) at x0 = x: the same value, and the same first derivative in x, as
    the chunk itself. Each coordinate row of a chunk belongs to one centre (its own position, or
    its copy of one neighbour), so any cotangent c (forces: 1; atomic virials: positions) pulls
    back as c_i g_i per centre. The backward pass then reuses g instead of re-running the chunk
    (the rematerialised program evaluates every chunk twice when the energy is an output too).
    There the chunks of each type run in a loop of their own (:func:`_type_loops`).

    ``max_nnei``: a fixed bound of nnei that sizes the chunks (in centres) when nnei is
    symbolic (narrowed neighbour lists under ``jax.export``); such lists are always chunked.

    ``attention``: a DPA-1 (se_atten) descriptor, whose attention layers' per-centre
    intermediates grow with nnei squared, and whose chunks pay for being small even without
    them: chunks of ``ATTN_CHUNK_PAIRS`` pairs.

    Programs compiled for a platform other than the CPU call ``fn`` on the whole system
    (``_on_cpu``).
    """
    nf, nloc, nnei = nlist.shape
    pairs = ATTN_CHUNK_PAIRS if attention else CENTRE_CHUNK_PAIRS
    if not isinstance(nnei, int):
        if max_nnei is None:
            raise ValueError("centre_chunks: a symbolic nnei needs max_nnei")
        ch = _per_chunk(max_nnei, pairs)
    else:
        ch = _per_chunk(nnei, pairs)
        if _whole(nf, nloc, nnei) or (isinstance(nf, int) and isinstance(nloc, int)
                                      and nf * nloc <= ch):
            return fn(coord_ext, atype_ext, nlist)  # the whole system as it is
    return _on_cpu(lambda: _centre_chunks(fn, coord_ext, atype_ext, nlist, ntypes, energy, ch),
                   lambda: fn(coord_ext, atype_ext, nlist))


def _centre_chunks(fn: Any, coord_ext: Any, atype_ext: Any, nlist: Any, ntypes: int,
                   energy: bool, ch: int) -> Any:
    """``centre_chunks`` in chunks of ``ch`` centres."""
    nf, nloc, nnei = nlist.shape
    n = nf * nloc
    # broadcasts, not repeat/tile: nf and nloc may be symbolic (jax.export)
    frame = jnp.broadcast_to(jnp.arange(nf)[:, None], (nf, nloc)).reshape(-1)
    centre = jnp.broadcast_to(jnp.arange(nloc)[None, :], (nf, nloc)).reshape(-1)
    types = atype_ext[:, :nloc].reshape(-1)
    order = jnp.argsort(types, stable=True)
    sorted_types = types[order]
    # slot of each sorted centre: every type's block starts on a chunk boundary
    counts = jnp.sum(types[None, :] == jnp.arange(ntypes, dtype=types.dtype)[:, None], axis=1)
    blocks = (counts + ch - 1) // ch * ch
    block_start = jnp.cumsum(blocks) - blocks
    slot = jnp.arange(n) - (jnp.cumsum(counts) - counts)[sorted_types] + block_start[sorted_types]
    nslot = ((n + ch - 1) // ch + ntypes - 1) * ch  # enough for any split into types
    zeros = jnp.zeros((nslot,), frame.dtype)
    slot_frame = zeros.at[slot].set(frame[order])
    slot_centre = zeros.at[slot].set(centre[order])
    # neighbour lists + 1: the empty slots' zeros become empty lists (-1) in ``_chunk_system``
    slot_nl = jnp.zeros((nslot, nnei), nlist.dtype).at[slot].set(
        nlist.reshape(-1, nnei)[order] + 1)
    if energy and _FIRST_ORDER:
        out = _type_loops(fn, coord_ext, atype_ext, slot_frame, slot_centre, slot_nl,
                          block_start, blocks, ntypes, ch, nslot)
        out = out[slot][jnp.argsort(order)]
        return out.reshape(nf, nloc, *out.shape[1:])

    @jax.checkpoint
    def chunk(fr: Any, ce: Any, nl1: Any, ty: Any) -> Any:
        coord, atype, nl_c, empty = _chunk_system(coord_ext, atype_ext, fr, ce, nl1, ty)
        _EMPTY_SLOT_TYPES.append(empty)
        try:
            return fn(coord[None], atype, nl_c)[0]
        finally:
            _EMPTY_SLOT_TYPES.pop()

    slot_type = jnp.clip(jnp.sum(jnp.arange(nslot)[:, None] >= block_start[None, :], axis=1) - 1,
                         0, ntypes - 1).astype(types.dtype)
    _UNIFORM_TYPES.append(True)
    try:
        out = _chunked(chunk, ch, slot_frame, slot_centre, slot_nl, slot_type)
    finally:
        _UNIFORM_TYPES.pop()
    out = out[slot][jnp.argsort(order)]
    return out.reshape(nf, nloc, *out.shape[1:])


def _chunk_system(coord_ext: Any, atype_ext: Any, fr: Any, ce: Any, nl1: Any, ty: Any
                  ) -> tuple[Any, Any, Any, Any]:
    """One chunk of ``ch`` centres as a small extended system: coordinates (ch * (1 + nnei), 3),
    centres first then one copy of each listed neighbour; types (1, ch * (1 + nnei)), padding
    centres taking ``ty``; the list (1, ch, nnei) renumbered into it; and the type (1, ch, 1)
    that each centre's empty slots take (``empty_slot_types``).

    fr, ce: (ch,) frame and centre index of each slot; nl1: (ch, nnei) its list + 1 (0: empty)."""
    ch, nnei = nl1.shape
    nl = nl1 - 1
    safe = jnp.where(nl >= 0, nl, 0)
    idx = jnp.concatenate([ce, safe.reshape(-1)])
    frames = jnp.concatenate([fr, jnp.broadcast_to(fr[:, None], (ch, nnei)).reshape(-1)])
    local = ch + jnp.arange(ch * nnei).reshape(ch, nnei)
    # empty slots take the type of their centre's frame's atom 0 (``neighbor_types``), not that
    # of the chunk's atom 0 (its first centre)
    return (coord_ext[frames, idx], atype_ext[frames, idx].at[:ch].set(ty)[None],
            jnp.where(nl >= 0, local, -1)[None], atype_ext[fr, 0][None, :, None])


def _type_loops(fn: Any, coord_ext: Any, atype_ext: Any, slot_frame: Any, slot_centre: Any,
                slot_nl: Any, block_start: Any, blocks: Any, ntypes: int, ch: int,
                nslot: Any) -> Any:
    """``_centre_chunks`` inside :func:`first_order_coordinates`, one loop per centre type.

    Each type's chunks (slots ``block_start[t]`` to ``block_start[t] + blocks[t]``) run in a
    loop of their own whose trip count is that type's, so the per-type networks' weights are
    constants of the loop body rather than slices of stacked weights picked by a loop index
    (plain se_e2_a, 1536 atoms: a [1600, 240] fitting weight copied per chunk), and no chunk is
    spent on padding between types. The loops only evaluate: each chunk returns its energies e
    and the gradient g of their sum in its coordinate rows; the loops see no differentiable
    input, so they need no reverse pass (a loop with a data-dependent trip count has none).
    The derivative enters afterwards, outside the loops, as the linearisation
    e + sum_rows g . (x - x0) at x0 = x over every slot's rows (see ``centre_chunks``).
    Returns (nslot, k)."""
    nnei = slot_nl.shape[1]
    x0 = jax.lax.stop_gradient(coord_ext)
    t0 = jax.lax.stop_gradient(atype_ext)

    def evaluate(t: int, fr: Any, ce: Any, nl1: Any) -> tuple[Any, Any]:
        coord, atype, nl_c, empty = _chunk_system(x0, t0, fr, ce, nl1, t)
        _EMPTY_SLOT_TYPES.append(empty)
        _UNIFORM_TYPES.append(t)
        try:
            e, pull = jax.vjp(lambda x: fn(x[None], atype, nl_c)[0], coord)
        finally:
            _UNIFORM_TYPES.pop()
            _EMPTY_SLOT_TYPES.pop()
        (g,) = pull(jnp.ones_like(e))
        rows = jnp.concatenate([g[:ch, None], g[ch:].reshape(ch, nnei, 3)], axis=1)
        return e, rows

    # output shapes of one chunk, for the loops' buffers
    e_shape, _ = jax.eval_shape(
        lambda: evaluate(0, slot_frame[:ch], slot_centre[:ch], slot_nl[:ch]))
    e_buf = jnp.zeros((nslot, *e_shape.shape[1:]), e_shape.dtype)
    g_buf = jnp.zeros((nslot, nnei + 1, 3), x0.dtype)
    for t in range(ntypes):
        def body(c: Any, bufs: tuple[Any, Any], t: int = t) -> tuple[Any, Any]:
            start = c * ch
            fr, ce = (jax.lax.dynamic_slice_in_dim(a, start, ch) for a in (slot_frame,
                                                                           slot_centre))
            nl1 = jax.lax.dynamic_slice_in_dim(slot_nl, start, ch)
            e, rows = evaluate(t, fr, ce, nl1)
            return (jax.lax.dynamic_update_slice_in_dim(bufs[0], e, start, 0),
                    jax.lax.dynamic_update_slice_in_dim(bufs[1], rows, start, 0))

        first = block_start[t] // ch
        e_buf, g_buf = jax.lax.fori_loop(first, first + blocks[t] // ch, body, (e_buf, g_buf))
    e_buf = jax.lax.stop_gradient(e_buf)
    g_buf = jax.lax.stop_gradient(g_buf)
    nl = slot_nl - 1
    idx = jnp.concatenate([slot_centre[:, None], jnp.where(nl >= 0, nl, 0)], axis=1)
    x = coord_ext[slot_frame[:, None], idx]  # (nslot, nnei + 1, 3)
    step = jnp.sum(g_buf * (x - jax.lax.stop_gradient(x)), axis=(1, 2))  # zero in value
    return e_buf + step[:, None].astype(e_buf.dtype)


register_kernel("centre_chunks", "jax.numpy", centre_chunks)


#: the types (1, ch, 1) that empty neighbour slots take in the chunk ``centre_chunks`` is tracing
_EMPTY_SLOT_TYPES: list[Any] = []


def empty_slot_types() -> Any:
    """Inside a ``centre_chunks`` chunk: the type (1, ch, 1) of each centre's frame's atom 0,
    which its empty neighbour slots take (``polypot.model.array_api.neighbor_types``);
    elsewhere None (the system's own atom 0)."""
    return _EMPTY_SLOT_TYPES[-1] if _EMPTY_SLOT_TYPES else None


register_kernel("empty_slot_types", "jax.numpy", empty_slot_types)


#: non-empty while ``centre_chunks`` traces a chunk, whose centres all share one type: True
#: (the type is data), or the type itself where a loop runs one type's chunks
_UNIFORM_TYPES: list[bool | int] = []


def uniform_type_params(ps: list, index: Any) -> Any:
    """Inside a ``centre_chunks`` chunk, where every centre has the same type: the parameters
    ``ps[t]`` of that type t (index (nf, n) the centres' types); elsewhere None."""
    if not _UNIFORM_TYPES:
        return None
    if not isinstance(_UNIFORM_TYPES[-1], bool):  # a loop of one type: its own parameters
        return ps[_UNIFORM_TYPES[-1]]
    t = index.reshape(-1)[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves)[t], *ps)


register_kernel("uniform_type_params", "jax.numpy", uniform_type_params)


#: the centres' count per type while tracing a program whose centres come sorted by type
_TYPE_COUNTS: list[tuple[Any, ...]] = []


@contextlib.contextmanager
def centres_sorted_by_type(counts: tuple[Any, ...]) -> Iterator[None]:
    """Trace a program whose local atoms come sorted by type, ``counts[t]`` of type t (may be
    symbolic; the caller sorts them): a per-type fitting of the whole system then runs each
    type's net on its own rows instead of every net on every row, masked (``EnergyFitting``;
    compressed se_e2_a, 1536 water atoms: value and gradient of the fitting 81 -> 40 ms)."""
    _TYPE_COUNTS.append(tuple(counts))
    try:
        yield
    finally:
        _TYPE_COUNTS.pop()


def sorted_type_counts() -> tuple[Any, ...] | None:
    """The counts of :func:`centres_sorted_by_type` being traced, or None."""
    return _TYPE_COUNTS[-1] if _TYPE_COUNTS else None


register_kernel("sorted_type_counts", "jax.numpy", sorted_type_counts)


# ---- message-passing layers in chunks of centre rows ------------------------------------------
def row_chunks(fn: Any, shared: tuple, rows: tuple, nnei: int) -> Any:
    """``fn(*shared, *rows_chunk)`` over chunks of the centre axis (1) of ``rows``
    (nf, nloc, ...), outputs (pytree of (nf, nloc, ...)) concatenated.

    For a layer whose update of a centre row needs only that row and the ``shared`` arrays
    (a DPA-2 repformer layer: its rows and the extended g1). Each chunk of about
    ``ROW_CHUNK_PAIRS`` (centre, neighbour) pairs is rematerialised in the backward pass
    (``jax.checkpoint``), so the layer's per-pair intermediates (attention maps, gathered
    neighbour features) exist for one chunk at a time; only the layer's inputs are kept.
    Off CPUs all rows go through ``fn`` at once (``_on_cpu``)."""
    nf, n = rows[0].shape[:2]
    ch = _per_chunk(nnei, ROW_CHUNK_PAIRS)
    if _whole(nf, n, nnei) or (isinstance(n, int) and n <= ch):
        return fn(*shared, *rows)

    def chunk(*xs: Any) -> Any:  # centre axis first in and out, as ``_chunked`` cuts it
        out = fn(*shared, *(jnp.moveaxis(x, 0, 1) for x in xs))
        return jax.tree.map(lambda o: jnp.moveaxis(o, 1, 0), out)

    out = _chunked(jax.checkpoint(chunk), ch, *(jnp.moveaxis(a, 1, 0) for a in rows),
                   whole=chunk)
    return jax.tree.map(lambda o: jnp.moveaxis(o, 0, 1), out)


register_kernel("row_chunks", "jax.numpy", row_chunks)
