"""Model compression: the geometric embedding net G(s) as a tabulated quintic spline.

DeePMD-kit's ``dp compress`` scheme, written for the Array API. The embedding net of
``se_e2_a`` and of ``se_atten`` / ``se_atten_v2`` with ``attn_layer`` 0 takes one scalar per
neighbour, the normalised radial feature s = (sw(r) / r - davg) / dstd. G is replaced by a
piecewise fifth-order polynomial in s: on each interval [x_l, x_l+1) the quintic matches the
network's value, first and second derivative at both ends (quintic Hermite), so the table is
C2 and forces stay smooth.

Grid (all in units of s, dimensionless):

* ``lower`` = floor(min over types and slots of -davg/dstd): the value of an empty or far slot;
* ``upper_data`` = ceil(max of (sw(r_min) / r_min - davg) / dstd) with r_min = ``min_nbor_dist``,
  the largest s the training data can produce;
* fine table [lower, upper) with stride ``table_stride_1`` (``-s``, default 0.01), ``upper``
  rounded up to a whole number of strides;
* coarse table [upper, top) with stride ``table_stride_2`` = 10 x ``table_stride_1``, top >=
  ``table_extrapolate`` x upper_data (``-e``, default 5);
* outside [lower, top] G is held constant at its boundary value (as DeePMD-kit does).

Type dependence:

* ``se_e2_a``: one table per embedding network (per neighbour type, or per (centre,
  neighbour) pair when ``type_one_side`` is false), the collection's network order;
* ``se_atten`` ``strip`` (and ``se_atten_v2``): one table for G_s(s); the type part
  G_t = N_t([T_j(, T_i)]) is precomputed once as a table over (centre, neighbour) type pairs
  (``type_table``, DeePMD-kit's "type embedding compression");
* ``se_atten`` ``concat`` with ``attn_layer`` 0: G(s, T_j, T_i) is, for fixed types, a function
  of s alone, so it is tabulated once per type pair (a polypot extension: DeePMD-kit compresses
  only ``strip``).

The evaluation is plain Array-API code (clip, integer cast for the interval index, one gather of
the coefficients, a sum over the powers of t = s - x_l), so every backend differentiates and
exports it unchanged.

File format (polypot-only): a compressed descriptor's dictionary carries the key ``compress``
(see :meth:`Tabulation.serialize`) next to its unchanged networks. DeePMD-kit 3.2 does not
serialise compression (its compressed models exist only as frozen programs) and its deserialisers
reject the unknown key, so such files are read by polypot only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..kernels import find_kernel
from .array_api import namespace, to_numpy
from .env_mat import smooth_weight
from .errors import ModelFormatError, check_class, check_version
from .network import EmbeddingNet, Params, activation
from .precision import to_dtype

NCOEF = 6  # quintic: powers 0..5

# (C, B, A) = M^-1 (h, D w, S w^2): the cubic, quartic and quintic terms of a Hermite quintic
_HERMITE = np.linalg.inv(np.array([[1.0, 1.0, 1.0], [3.0, 4.0, 5.0], [6.0, 12.0, 20.0]]))


class CompressionError(ValueError):
    """A model or option that cannot be compressed."""


# ---- the table and its evaluation ----------------------------------------------------------------
@dataclass(frozen=True)
class Tabulation:
    """Static description of a compressed embedding: the grid in s and the table layout.

    The coefficients live in the parameters (``{"table": (ntab, nint, 6 * width), ...}``), power
    p of interval l of table k at ``table[k, l, p * width:(p + 1) * width]``, in the local
    variable t = s - x_l.
    """

    lower: float  # start of the fine table (s units)
    upper: float  # end of the fine table = start of the coarse one
    stride0: float  # fine stride (table_stride_1)
    stride1: float  # coarse stride (table_stride_2)
    n0: int  # fine intervals
    n1: int  # coarse intervals
    ntab: int  # number of tables (networks or type pairs)
    width: int  # output width M of the embedding
    extrapolate: float = 5.0
    check_frequency: int = -1
    min_nbor_dist: float = 0.0

    @property
    def nint(self) -> int:
        return self.n0 + self.n1

    @property
    def top(self) -> float:
        """End of the coarse table; G is constant beyond."""
        return self.upper + self.n1 * self.stride1

    def knots(self) -> np.ndarray:
        """Interval ends (nint + 1,) in s, float64."""
        fine = self.lower + self.stride0 * np.arange(self.n0 + 1, dtype=np.float64)
        coarse = self.upper + self.stride1 * np.arange(1, self.n1 + 1, dtype=np.float64)
        return np.concatenate([fine, coarse])

    def __call__(self, table: Any, s: Any, index: Any = None) -> Any:
        """G(s) from the table.

        table: (ntab, nint, 6 * width) coefficients; s: (...) normalised radial feature;
        index: (...) ints in [0, ntab) choosing each entry's table (None: table 0).
        Returns (..., width). Differentiable in s (the interval index is a constant).
        """
        xp = namespace(s)
        c, t = self._gather(table, s, index)
        # one pass over the gathered coefficients (Horner's rule makes five; slower on CPUs)
        return xp.sum(c * _powers(t)[..., None], axis=-2)

    def contract(self, table: Any, s: Any, rr: Any, index: Any = None) -> Any:
        """sum_j G(s_j)^T R_j (..., width, 4) without forming G.

        s: (..., nnei); rr: (..., nnei, 4) environment rows; index as in ``__call__``. The
        powers of t go to R first (Q_j = t_j^p R_j, (..., nnei * 6, 4)), then one matmul with
        the gathered coefficients (..., nnei * 6, width): the coefficients are read once.
        A backend may register a faster ``tabulated_contract`` kernel (same arguments after
        this Tabulation; see :mod:`polypot.kernels`).
        """
        xp = namespace(s)
        kernel = find_kernel("tabulated_contract", xp)
        if kernel is not None:
            return kernel(self, table, s, rr, index)
        return self.contract_reference(table, s, rr, index)

    def contract_reference(self, table: Any, s: Any, rr: Any, index: Any = None) -> Any:
        """:meth:`contract` in plain Array-API code (what every kernel is tested against)."""
        xp = namespace(s)
        c, t = self._gather(table, s, index)
        lead, nnei = tuple(s.shape[:-1]), s.shape[-1]
        nd = len(lead)
        q = _powers(t)[..., None] * rr[..., None, :]  # (..., nnei, 6, 4)
        q = xp.reshape(q, (*lead, nnei * NCOEF, rr.shape[-1]))
        c = xp.reshape(c, (*lead, nnei * NCOEF, self.width))
        return xp.matmul(xp.permute_dims(c, (*range(nd), nd + 1, nd)), q)

    def contract_typed(self, table: Any, s: Any, rr: Any, type_table: Any, type_index: Any,
                       weight: Any = None) -> Any:
        """sum_j G_j^T R_j (..., width, 4) with G_j = g(s_j) * (1 + w_j T[type_index_j]).

        The strip-mode DPA-1 embedding: g from table 0, T (ntp, width) the type part over type
        pairs, w (..., nnei) its weight (the switch function in smooth mode; None: 1).
        A backend may register a faster ``tabulated_contract_typed`` kernel."""
        xp = namespace(s)
        kernel = find_kernel("tabulated_contract_typed", xp)
        if kernel is not None:
            return kernel(self, table, s, rr, type_table, type_index, weight)
        return self.contract_typed_reference(table, s, rr, type_table, type_index, weight)

    def contract_typed_reference(self, table: Any, s: Any, rr: Any, type_table: Any,
                                 type_index: Any, weight: Any = None) -> Any:
        """:meth:`contract_typed` in plain Array-API code."""
        xp = namespace(s)
        g = self(table, s)
        gt = xp.reshape(xp.take(type_table, xp.reshape(type_index, (-1,)), axis=0),
                        (*type_index.shape, self.width))
        if weight is not None:
            gt = gt * weight[..., None]
        gg = g * gt + g
        nd = gg.ndim - 2
        return xp.matmul(xp.permute_dims(gg, (*range(nd), nd + 1, nd)), rr)

    def interval(self, s: Any, index: Any = None) -> tuple[Any, Any]:
        """Table row (...) of each entry (its interval, offset by ``index`` tables) and the local
        variable t = s - x_l (...), s clipped to [lower, top]."""
        xp = namespace(s)
        sc = xp.clip(s, self.lower, self.top)
        fine = sc < self.upper
        u0 = xp.clip((sc - self.lower) / self.stride0, 0.0, float(self.n0 - 1))
        u1 = xp.clip((sc - self.upper) / self.stride1, 0.0, float(self.n1 - 1))
        i0 = xp.astype(u0, xp.int64)  # u >= 0: the cast truncates, i.e. floors
        i1 = xp.astype(u1, xp.int64)
        start = xp.where(fine, self.lower + xp.astype(i0, s.dtype) * self.stride0,
                         self.upper + xp.astype(i1, s.dtype) * self.stride1)
        row = xp.where(fine, i0, i1 + self.n0)
        if index is not None:
            row = row + index * self.nint
        return row, sc - start

    def _gather(self, table: Any, s: Any, index: Any) -> tuple[Any, Any]:
        """Coefficients (..., 6, width) of each entry's interval and t = s - x_l (...)."""
        xp = namespace(s)
        m = self.width
        flat = xp.reshape(table, (self.ntab * self.nint, NCOEF * m))
        row, t = self.interval(s, index)
        c = xp.reshape(xp.take(flat, xp.reshape(row, (-1,)), axis=0), (*tuple(s.shape), NCOEF, m))
        return c, t

    # ---- files -----------------------------------------------------------------------------
    def serialize(self, p: Params) -> dict:
        """The descriptor's ``compress`` entry (polypot-only; DeePMD-kit's option names)."""
        return {
            "@class": "Tabulation",
            "@version": 1,
            "scheme": "quintic_hermite",
            "min_nbor_dist": self.min_nbor_dist,
            "table_extrapolate": self.extrapolate,
            "table_stride_1": self.stride0,
            "table_stride_2": self.stride1,
            "check_frequency": self.check_frequency,
            "lower": self.lower,
            "upper": self.upper,
            "n_fine": self.n0,
            "n_coarse": self.n1,
            "@variables": {k: to_numpy(v) for k, v in p.items()},
        }

    @classmethod
    def deserialize(cls, data: dict, dtype: Any) -> tuple[Tabulation, Params]:
        """(Tabulation, params) from a ``compress`` entry; arrays cast to ``dtype``."""
        check_class(data, "Tabulation")
        check_version(data, "Tabulation", 1)
        if data.get("scheme", "quintic_hermite") != "quintic_hermite":
            raise ModelFormatError(f"compress: unknown scheme {data.get('scheme')!r}")
        var = {k: np.asarray(v).astype(dtype) for k, v in data["@variables"].items()}
        table = var.get("table")
        n0, n1 = int(data["n_fine"]), int(data["n_coarse"])
        if table is None or table.ndim != 3 or table.shape[1] != n0 + n1 \
                or table.shape[2] % NCOEF:
            raise ModelFormatError(
                f"compress: 'table' must have shape (ntab, {n0 + n1}, 6 * width), got "
                f"{None if table is None else table.shape}"
            )
        spec = cls(
            lower=float(data["lower"]), upper=float(data["upper"]),
            stride0=float(data["table_stride_1"]), stride1=float(data["table_stride_2"]),
            n0=n0, n1=n1, ntab=int(table.shape[0]), width=int(table.shape[2] // NCOEF),
            extrapolate=float(data.get("table_extrapolate", 5.0)),
            check_frequency=int(data.get("check_frequency", -1)),
            min_nbor_dist=float(data.get("min_nbor_dist", 0.0)),
        )
        return spec, var


def _powers(t: Any) -> Any:
    """(..., 6): t^0 .. t^5 of t (...)."""
    xp = namespace(t)
    powers = [xp.ones_like(t), t]
    for _ in range(NCOEF - 2):
        powers.append(powers[-1] * t)
    return xp.stack(powers, axis=-1)


# ---- building the table (NumPy, float64) -----------------------------------------------------
def env_mat_range(davg: np.ndarray, dstd: np.ndarray, rcut: float, rcut_smth: float,
                  min_nbor_dist: float, protection: float = 0.0) -> tuple[float, float]:
    """(lower, upper) of the normalised s over the data, rounded out to integers.

    davg, dstd: (ntypes, nnei, 4); min_nbor_dist in Å. lower is s of an empty slot
    (-davg/dstd), upper is s at the closest distance seen in training.
    """
    avg = np.asarray(davg, dtype=np.float64)[..., 0]
    std = np.asarray(dstd, dtype=np.float64)[..., 0]
    r = float(min_nbor_dist)
    sw = float(smooth_weight(np, np.asarray(r), rcut_smth, rcut))
    lower = np.min(-avg / std)
    upper = np.max((sw / (r + protection) - avg) / std)
    return float(np.floor(lower)) + 0.0, float(np.ceil(upper)) + 0.0  # no -0.0


def make_grid(lower: float, upper: float, step: float, extrapolate: float) -> dict:
    """Grid fields of a :class:`Tabulation`: fine stride ``step`` on [lower, upper], coarse
    stride 10 * ``step`` up to ``extrapolate`` * upper (at least one coarse interval)."""
    if not (step > 0 and math.isfinite(step)):
        raise CompressionError(f"compress: step must be a positive number, got {step}")
    if not (extrapolate >= 1 and math.isfinite(extrapolate)):
        raise CompressionError(f"compress: extrapolate must be >= 1, got {extrapolate}")
    stride1 = 10.0 * step
    n0 = max(1, math.ceil((upper - lower) / step - 1e-9))
    end = lower + n0 * step
    n1 = max(1, math.ceil((extrapolate * upper - end) / stride1 - 1e-9))
    return {"lower": float(lower), "upper": float(end), "stride0": float(step),
            "stride1": stride1, "n0": n0, "n1": n1}


def _activation_derivatives(name: str | None, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives of activation ``name`` at ``z`` (NumPy)."""
    key = (name or "none").lower()
    if key == "tanh":
        t = np.tanh(z)
        return 1.0 - t * t, -2.0 * t * (1.0 - t * t)
    if key in ("none", "linear"):
        return np.ones_like(z), np.zeros_like(z)
    if key == "relu":
        return (z > 0).astype(z.dtype), np.zeros_like(z)
    if key == "relu6":
        return ((z > 0) & (z < 6)).astype(z.dtype), np.zeros_like(z)
    sig = 1.0 / (1.0 + np.exp(-z))
    if key == "softplus":
        return sig, sig * (1.0 - sig)
    if key == "sigmoid":
        return sig * (1.0 - sig), sig * (1.0 - sig) * (1.0 - 2.0 * sig)
    if key == "silu":
        ds = sig * (1.0 - sig)
        return sig + z * ds, 2.0 * ds + z * ds * (1.0 - 2.0 * sig)
    if key in ("gelu", "gelu_tf"):
        c, k = math.sqrt(2.0 / math.pi), 0.044715
        t = np.tanh(c * (z + k * z**3))
        du, d2u = c * (1.0 + 3.0 * k * z * z), c * 6.0 * k * z
        sech2 = 1.0 - t * t
        d1 = 0.5 * (1.0 + t) + 0.5 * z * sech2 * du
        d2 = sech2 * du + 0.5 * z * (sech2 * d2u - 2.0 * t * sech2 * du * du)
        return d1, d2
    raise CompressionError(f"compress: activation {name!r} cannot be tabulated")


def net_with_derivatives(net: EmbeddingNet, p: Params, x: np.ndarray, direction: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-mode value, first and second derivative of ``net`` along ``direction``.

    x: (n, in_dim) inputs; direction: (in_dim,) (the unit vector of s). Returns three
    (n, out_dim) arrays: G, dG/ds, d2G/ds2 (float64).
    """
    y = np.asarray(x, dtype=np.float64)
    dy = np.broadcast_to(np.asarray(direction, dtype=np.float64), y.shape)
    d2y = np.zeros_like(y)
    for layer, lp in zip(net.layers, p["layers"], strict=True):
        w = np.asarray(lp["w"], dtype=np.float64)
        z, dz, d2z = y @ w, dy @ w, d2y @ w
        if lp.get("b") is not None:
            z = z + np.asarray(lp["b"], dtype=np.float64)
        f1, f2 = _activation_derivatives(layer.activation_function, z)
        a = activation(layer.activation_function, z)
        da, d2a = f1 * dz, f2 * dz * dz + f1 * d2z
        if lp.get("idt") is not None:
            idt = np.asarray(lp["idt"], dtype=np.float64)
            a, da, d2a = a * idt, da * idt, d2a * idt
        if layer.resnet and layer.out_dim in (layer.in_dim, 2 * layer.in_dim):
            rep = layer.out_dim // layer.in_dim
            a = a + np.tile(y, rep)
            da = da + np.tile(dy, rep)
            d2a = d2a + np.tile(d2y, rep)
        y, dy, d2y = a, da, d2a
    return y, dy, d2y


def hermite_coefficients(knots: np.ndarray, y: np.ndarray, dy: np.ndarray, d2y: np.ndarray
                         ) -> np.ndarray:
    """Quintic Hermite coefficients (nint, 6, M) in t = s - x_l, powers 0..5.

    knots: (nint + 1,); y, dy, d2y: (nint + 1, M) value and derivatives at the knots.
    """
    w = np.diff(knots)[:, None]
    y0, y1, d0, d1, s0, s1 = y[:-1], y[1:], dy[:-1], dy[1:], d2y[:-1], d2y[1:]
    rhs = np.stack([y1 - y0 - d0 * w - 0.5 * s0 * w * w,
                    (d1 - d0 - s0 * w) * w,
                    (s1 - s0) * w * w])
    cba = np.einsum("ij,j...->i...", _HERMITE, rhs)
    return np.stack([y0, d0, 0.5 * s0, cba[0] / w**3, cba[1] / w**4, cba[2] / w**5], axis=1)


def tabulate_net(net: EmbeddingNet, p: Params, knots: np.ndarray,
                 fixed: np.ndarray | None = None) -> np.ndarray:
    """One table (nint, 6 * M) of ``net`` over s at ``knots``; the net's input is
    [s, fixed] (``fixed`` (k,) the constant type-embedding part, or None)."""
    fixed = np.zeros(0) if fixed is None else np.asarray(fixed, dtype=np.float64)
    x = np.concatenate([knots[:, None], np.broadcast_to(fixed, (knots.size, fixed.size))],
                       axis=1)
    direction = np.zeros(x.shape[1])
    direction[0] = 1.0
    coef = hermite_coefficients(knots, *net_with_derivatives(net, p, x, direction))
    return np.reshape(coef, (coef.shape[0], -1))


# ---- compressing descriptors and models ------------------------------------------------------
def _as_float64(p: Any) -> Any:
    if isinstance(p, dict):
        return {k: _as_float64(v) for k, v in p.items()}
    if isinstance(p, (list, tuple)):
        return type(p)(_as_float64(v) for v in p)
    if p is None:
        return None
    arr = np.asarray(to_numpy(p))
    return arr.astype(np.float64) if arr.dtype.kind == "f" else arr


def _spec(desc: Any, p: Params, min_nbor_dist: float, step: float, extrapolate: float,
          check_frequency: int, ntab: int) -> Tabulation:
    if not (min_nbor_dist > 0 and math.isfinite(min_nbor_dist)):
        raise CompressionError(
            f"compress: min_nbor_dist must be a positive distance (Å), got {min_nbor_dist}"
        )
    lower, upper = env_mat_range(p["davg"], p["dstd"], desc.rcut, desc.rcut_smth,
                                 min_nbor_dist, desc.env_protection)
    return Tabulation(**make_grid(lower, upper, step, extrapolate), ntab=ntab,
                      width=desc.neuron[-1], extrapolate=float(extrapolate),
                      check_frequency=int(check_frequency), min_nbor_dist=float(min_nbor_dist))


def _tables_se_a(desc: Any, p: Params, knots: np.ndarray) -> np.ndarray:
    """(nnets, nint, 6 M): one table per network of the collection (zeros for absent nets)."""
    coll = desc.embeddings
    out = []
    for net, np_ in zip(coll.networks, p["embeddings"]["networks"], strict=True):
        if net is None:
            out.append(np.zeros((knots.size - 1, NCOEF * desc.neuron[-1])))
        else:
            out.append(tabulate_net(net, np_, knots))
    return np.stack(out)


def _tables_se_atten(desc: Any, p: Params, knots: np.ndarray) -> dict:
    """Tables of DPA-1: ``table`` and, in strip mode, the type-pair ``type_table``."""
    emb = desc.embedding
    if desc.tebd_input_mode == "strip":
        types = desc.type_embedding(p["type_embedding"], np)
        return {"table": tabulate_net(emb, p["embedding"], knots)[None],
                "type_table": desc.strip_type_table(p, types, np)}
    types = desc.type_embedding(p["type_embedding"], np)[: desc.ntypes]
    if desc.type_one_side:
        fixed = [types[tj] for tj in range(desc.ntypes)]
    else:  # table ti * ntypes + tj; the net's input is [s, T_j, T_i]
        fixed = [np.concatenate([types[tj], types[ti]])
                 for ti in range(desc.ntypes) for tj in range(desc.ntypes)]
    return {"table": np.stack([tabulate_net(emb, p["embedding"], knots, f) for f in fixed])}


def compress_descriptor(desc: Any, p: Params, min_nbor_dist: float, step: float = 0.01,
                        extrapolate: float = 5.0, check_frequency: int = -1
                        ) -> tuple[Any, Params]:
    """A copy of descriptor ``desc`` (params ``p``) whose embedding net is tabulated."""
    from .descriptor.dpa2 import DescrptDPA2
    from .descriptor.se_atten import DescrptSeAtten
    from .descriptor.se_e2_a import DescrptSeA

    name = getattr(desc, "type_name", type(desc).__name__)
    if isinstance(desc, DescrptDPA2):
        return _compress_dpa2(desc, p, min_nbor_dist, step, extrapolate, check_frequency)
    if getattr(desc, "compress", None) is not None:
        raise CompressionError(f"compress: the {name} descriptor is already compressed")
    p64 = _as_float64(p)
    if isinstance(desc, DescrptSeA):
        ntab = len(desc.embeddings.networks)
    elif isinstance(desc, DescrptSeAtten):
        if desc.attn_layer != 0:
            raise CompressionError(
                f"compress: {name} with attn_layer = {desc.attn_layer} cannot be compressed: "
                "the attention layers mix neighbours, so G is not a function of s alone "
                "(only attn_layer = 0 is supported, as in DeePMD-kit)"
            )
        ntab = 1 if desc.tebd_input_mode == "strip" else desc.ntypes ** (
            1 if desc.type_one_side else 2)
    else:
        raise CompressionError(
            f"compress: descriptor {name!r} is not supported; model compression covers "
            "se_e2_a and se_atten / se_atten_v2 with attn_layer = 0"
        )
    spec = _spec(desc, p64, min_nbor_dist, step, extrapolate, check_frequency, ntab)
    knots = spec.knots()
    if isinstance(desc, DescrptSeA):
        tables = {"table": _tables_se_a(desc, p64, knots)}
    else:
        tables = _tables_se_atten(desc, p64, knots)
    dt = to_dtype(desc.precision)
    new_p = dict(p)
    new_p["compress"] = {k: np.asarray(to_numpy(v)).astype(dt) for k, v in tables.items()}
    return dataclasses.replace(desc, compress=spec), new_p


def _compress_dpa2(desc: Any, p: Params, min_nbor_dist: float, step: float,
                   extrapolate: float, check_frequency: int) -> tuple[Any, Params]:
    """DPA-2: the repinit block (a DPA-1 block without attention) is tabulated like se_atten;
    the three-body block and the repformer layers stay networks (as in DeePMD-kit)."""
    if desc.repinit_compress is not None:
        raise CompressionError("compress: the dpa2 descriptor is already compressed")
    block = desc.repinit_block
    block_p = {**p["repinit"], "type_embedding": p["type_embedding"]}
    block, block_p = compress_descriptor(block, block_p, min_nbor_dist, step, extrapolate,
                                         check_frequency)
    new_p = dict(p)
    new_p["repinit"] = {**p["repinit"], "compress": block_p["compress"]}
    return dataclasses.replace(desc, repinit_compress=block.compress), new_p


def compress_model(model: Any, params: Params, min_nbor_dist: float, step: float = 0.01,
                   extrapolate: float = 5.0, check_frequency: int = -1
                   ) -> tuple[Any, Params]:
    """(model, params) with the descriptor's embedding net tabulated (see the module doc).

    min_nbor_dist: smallest interatomic distance of the training data, Å; step: fine stride
    in s (the coarse one is 10 x); extrapolate: the coarse table reaches extrapolate x the
    data's largest s; check_frequency: kept for DeePMD-kit compatibility (no effect).
    """
    atomic = model.atomic
    desc, dp = compress_descriptor(atomic.descriptor, params["descriptor"], min_nbor_dist,
                                   step, extrapolate, check_frequency)
    new_params = dict(params)
    new_params["descriptor"] = dp
    return type(model)(dataclasses.replace(atomic, descriptor=desc)), new_params
