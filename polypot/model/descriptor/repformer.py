"""The repformer block of DPA-2 (Zhang et al., npj Comput. Mater. 10, 293, 2024).

Three channels per centre i and neighbour slot j: the atom channel g1 (nloc, g1_dim), the
invariant pair channel g2 (nloc, nnei, g2_dim) and the equivariant pair channel h2
(nloc, nnei, 3). Each :class:`RepformerLayer` collects update terms for every channel and
combines them (``res_avg``, ``res_incr`` or ``res_residual``); the neighbours' g1 comes from the
extended system, which the caller refreshes through ``mapping`` before every layer.
Term names and the serialized layout follow DeePMD-kit 3.2 (``RepformerLayer`` @version 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array_api import gather_neighbors, namespace, softmax, to_numpy
from ..errors import ModelFormatError, check_class, check_version
from ..network import Layer, LayerNorm, Params, activation
from ..precision import canonical, to_dtype
from .attention import ATTN_SHIFT, MASKED_LOGIT

UPDATE_STYLES = ("res_avg", "res_incr", "res_residual")
#: protection of 1 / nnei in the non-smooth averages (DeePMD-kit's ``epsilon``)
NNEI_EPS = 1e-4


def _inv_nnei(xp: Any, mask: Any, nnei: int, smooth: bool, sqrt: bool, dtype: Any) -> Any:
    """1 / (number of neighbours) per centre, (nf, nloc, 1): the sel ``nnei`` when smooth (the
    switch already damps far slots), else the real count (+ eps); square-rooted with ``sqrt``."""
    if smooth:
        return 1.0 / (math.sqrt(nnei) if sqrt else float(nnei))
    count = xp.sum(xp.astype(mask, dtype), axis=-1, keepdims=True)
    return 1.0 / (NNEI_EPS + (xp.sqrt(count) if sqrt else count))


def symmetrize(xp: Any, g: Any, hw: Any, axis_neuron: int) -> Any:
    """Rotation-invariant atom features from pair features: H = hw^T g (3, ng), then
    H[:, :axis]^T H / 3 flattened. g (nf, nloc, nnei, ng); hw (nf, nloc, nnei, 3) the
    equivariant pair channel already weighted per slot (switch or mask, and 1 / nnei), so that
    no (nnei, ng)-sized weighted copy of g is needed. Returns (nf, nloc, axis * ng)."""
    nf, nloc, _, ng = g.shape
    hg = xp.matmul(xp.permute_dims(hw, (0, 1, 3, 2)), g)  # (nf, nloc, 3, ng)
    grrg = xp.matmul(xp.permute_dims(hg[..., :axis_neuron], (0, 1, 3, 2)), hg) / 3.0
    return xp.reshape(grrg, (nf, nloc, axis_neuron * ng))


def _layer(in_dim: int, out_dim: int, bias: bool, precision: str) -> Layer:
    return Layer(in_dim, out_dim, "none", bias, False, False, precision)


@dataclass(frozen=True)
class RepformerLayer:
    """One repformer layer: (g1_ext, g2, h2) -> (g1, g2, h2) of the local atoms."""

    rcut: float
    rcut_smth: float
    nnei: int
    ntypes: int
    g1_dim: int = 128
    g2_dim: int = 16
    axis_neuron: int = 4
    update_chnnl_2: bool = True
    update_g1_has_conv: bool = True
    update_g1_has_drrd: bool = True
    update_g1_has_grrg: bool = True
    update_g1_has_attn: bool = True
    update_g2_has_g1g1: bool = True
    update_g2_has_attn: bool = True
    update_h2: bool = False
    attn1_hidden: int = 64
    attn1_nhead: int = 4
    attn2_hidden: int = 16
    attn2_nhead: int = 4
    attn2_has_gate: bool = False
    activation_function: str = "tanh"
    update_style: str = "res_avg"
    update_residual: float = 0.001
    update_residual_init: str = "norm"
    smooth: bool = True
    precision: str = "float64"
    trainable_ln: bool = True
    use_sqrt_nnei: bool = True
    g1_out_conv: bool = True
    g1_out_mlp: bool = True
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.update_style not in UPDATE_STYLES:
            raise ModelFormatError(
                f"repformer: update_style must be one of {UPDATE_STYLES}, got "
                f"{self.update_style!r}")
        if self.update_residual_init not in ("norm", "const"):
            raise ModelFormatError(
                f"repformer: update_residual_init must be 'norm' or 'const', got "
                f"{self.update_residual_init!r}")
        if not self.update_chnnl_2:  # the last layer leaves g2 and h2 alone
            for name in ("update_g2_has_g1g1", "update_g2_has_attn", "update_h2"):
                object.__setattr__(self, name, False)

    # ---- structure ---------------------------------------------------------------------------
    @property
    def g1_in_dim(self) -> int:
        """Width of the features that ``linear1`` mixes."""
        n = 0 if self.g1_out_mlp else self.g1_dim
        if self.update_g1_has_grrg:
            n += self.g2_dim * self.axis_neuron
        if self.update_g1_has_drrd:
            n += self.g1_dim * self.axis_neuron
        if self.update_g1_has_conv and not self.g1_out_conv:
            n += self.g2_dim
        return n

    @property
    def has_attn2_map(self) -> bool:
        return self.update_g2_has_attn or self.update_h2

    @property
    def needs_neighbor_g1(self) -> bool:
        return (self.update_g1_has_drrd or self.update_g1_has_conv or self.update_g1_has_attn
                or self.update_g2_has_g1g1)

    def layers(self) -> dict[str, Any]:
        """Every sub-layer by its DeePMD-kit key (attention maps as dicts of their layers)."""
        g1, g2, pr = self.g1_dim, self.g2_dim, self.precision
        out: dict[str, Any] = {"linear1": _layer(self.g1_in_dim, g1, True, pr)}
        if self.update_chnnl_2:
            out["linear2"] = _layer(g2, g2, True, pr)
        if self.update_g1_has_conv:
            out["proj_g1g2"] = (_layer(g2, g1, False, pr) if self.g1_out_conv
                                else _layer(g1, g2, False, pr))
        if self.update_g2_has_g1g1:
            out["proj_g1g1g2"] = _layer(g1, g2, False, pr)
        if self.has_attn2_map:
            nd, nh = self.attn2_hidden, self.attn2_nhead
            out["attn2g_map"] = {"mapqk": _layer(g2, nd * 2 * nh, False, pr)}
            if self.update_g2_has_attn:
                out["attn2_mh_apply"] = {"mapv": _layer(g2, g2 * nh, False, pr),
                                         "head_map": _layer(g2 * nh, g2, True, pr)}
                out["attn2_lm"] = LayerNorm(g2, self.ln_eps, self.trainable_ln, pr)
            if self.update_h2:
                out["attn2_ev_apply"] = {"head_map": _layer(nh, 1, False, pr)}
        if self.update_g1_has_attn:
            nd, nh = self.attn1_hidden, self.attn1_nhead
            out["loc_attn"] = {"mapq": _layer(g1, nd * nh, False, pr),
                               "mapkv": _layer(g1, (nd + g1) * nh, False, pr),
                               "head_map": _layer(g1 * nh, g1, True, pr)}
        if self.g1_out_mlp:
            out["g1_self_mlp"] = _layer(g1, g1, True, pr)
        return out

    def residual_dims(self) -> dict[str, list[int]]:
        """Widths of the ``res_residual`` scale vectors, in the order of the update terms."""
        if self.update_style != "res_residual":
            return {"g1_residual": [], "g2_residual": [], "h2_residual": []}
        g1 = [self.g1_dim]  # linear1's term
        if self.g1_out_mlp:
            g1.append(self.g1_dim)
        if self.update_g1_has_conv and self.g1_out_conv:
            g1.append(self.g1_dim)
        if self.update_g1_has_attn:
            g1.append(self.g1_dim)
        g2 = []
        if self.update_chnnl_2:
            g2.append(self.g2_dim)
            if self.update_g2_has_g1g1:
                g2.append(self.g2_dim)
            if self.update_g2_has_attn:
                g2.append(self.g2_dim)
        h2 = [1] if self.update_h2 else []
        return {"g1_residual": g1, "g2_residual": g2, "h2_residual": h2}

    def init(self, rng: np.random.Generator) -> Params:
        def init_tree(spec: Any) -> Any:
            if isinstance(spec, dict):
                return {k: init_tree(v) for k, v in spec.items()}
            return spec.init(rng)

        p = {k: init_tree(v) for k, v in self.layers().items()}
        dt = to_dtype(self.precision)
        for name, dims in self.residual_dims().items():
            if self.update_residual_init == "norm":
                p[name] = [rng.normal(0.0, self.update_residual, d).astype(dt) for d in dims]
            else:
                p[name] = [np.full(d, self.update_residual, dtype=dt) for d in dims]
        return p

    # ---- forward -----------------------------------------------------------------------------
    def _act(self, x: Any) -> Any:
        return activation(self.activation_function, x)

    def _attn2_map(self, p: Params, g2: Any, h2: Any, mask: Any, sw: Any) -> Any:
        """Pair-pair attention weights A (nf, nloc, nh, nnei, nnei), times h_j.h_k / sqrt 3.

        Written with as few (nh, nnei, nnei) temporaries as possible (they dominate DPA-2's
        memory): the factors without a head axis (gate, switch products) are combined first.
        Smooth: softmax_k((L g_jk + c) s_j s_k - c) s_j s_k g_jk / sqrt 3 with L the logits,
        g the gate (1 without ``attn2_has_gate``) and c the shift; the masked slots have s = 0,
        so no separate masking is needed. Otherwise the masked softmax of L g."""
        xp = namespace(g2)
        nf, nloc, nnei, _ = g2.shape
        nd, nh = self.attn2_hidden, self.attn2_nhead
        qk = _layer(self.g2_dim, nd * 2 * nh, False, self.precision)(p["mapqk"], g2)
        qk = xp.permute_dims(xp.reshape(qk, (nf, nloc, nnei, nd, 2 * nh)), (0, 1, 4, 2, 3))
        q, k = qk[:, :, :nh, ...], qk[:, :, nh:, ...]
        logits = xp.matmul(q, xp.permute_dims(k, (0, 1, 2, 4, 3)))  # (nf, nloc, nh, j, k)
        hh = xp.matmul(h2, xp.permute_dims(h2, (0, 1, 3, 2)))  # (nf, nloc, j, k)
        scale = hh / math.sqrt(nd) if self.attn2_has_gate else None
        if self.smooth:
            pair = sw[:, :, :, None] * sw[:, :, None, :]
            scale = pair / math.sqrt(nd) if scale is None else scale * pair
            w = logits * scale[:, :, None, ...] + (ATTN_SHIFT * (pair - 1.0))[:, :, None, ...]
            w = softmax(xp, w, axis=-1)
            return w * (pair * hh / math.sqrt(3.0))[:, :, None, ...]
        w = logits / math.sqrt(nd) if scale is None else logits * scale[:, :, None, ...]
        w = xp.where(mask[:, :, None, None, :], w, xp.full_like(w, MASKED_LOGIT))
        w = softmax(xp, w, axis=-1)
        keep = mask[:, :, :, None] & mask[:, :, None, :]
        return w * xp.where(keep, hh / math.sqrt(3.0), xp.zeros_like(hh))[:, :, None, ...]

    def _attn2_apply(self, p: Params, aa: Any, g2: Any) -> Any:
        """Multi-head mix of the neighbours' g2 by A: (nf, nloc, nnei, g2_dim)."""
        xp = namespace(g2)
        nf, nloc, nnei, ng2 = g2.shape
        nh = self.attn2_nhead
        v = _layer(ng2, ng2 * nh, False, self.precision)(p["mapv"], g2)
        v = xp.permute_dims(xp.reshape(v, (nf, nloc, nnei, ng2, nh)), (0, 1, 4, 2, 3))
        o = xp.permute_dims(xp.matmul(aa, v), (0, 1, 3, 4, 2))  # (nf, nloc, nnei, ng2, nh)
        o = xp.reshape(o, (nf, nloc, nnei, ng2 * nh))
        return _layer(ng2 * nh, ng2, True, self.precision)(p["head_map"], o)

    def _attn2_equivariant(self, p: Params, aa: Any, h2: Any) -> Any:
        """h2 mixed by A, heads combined linearly: (nf, nloc, nnei, 3)."""
        xp = namespace(h2)
        o = xp.matmul(aa, h2[:, :, None, ...])  # (nf, nloc, nh, nnei, 3)
        o = xp.permute_dims(o, (0, 1, 3, 4, 2))
        y = _layer(self.attn2_nhead, 1, False, self.precision)(p["head_map"], o)
        return y[..., 0]

    def _local_attn(self, p: Params, g1: Any, gg1: Any, mask: Any, sw: Any) -> Any:
        """Attention of each centre over its neighbours' g1: (nf, nloc, g1_dim)."""
        xp = namespace(g1)
        nf, nloc, nnei, ni = gg1.shape
        nd, nh = self.attn1_hidden, self.attn1_nhead
        pr = self.precision
        q = _layer(ni, nd * nh, False, pr)(p["mapq"], g1)
        q = xp.permute_dims(xp.reshape(q, (nf, nloc, nd, nh)), (0, 1, 3, 2))  # (.., nh, nd)
        kv = _layer(ni, (nd + ni) * nh, False, pr)(p["mapkv"], gg1)
        kv = xp.permute_dims(xp.reshape(kv, (nf, nloc, nnei, nd + ni, nh)), (0, 1, 4, 2, 3))
        k, v = kv[..., :nd], kv[..., nd:]  # (nf, nloc, nh, nnei, nd | ni)
        w = xp.matmul(k, q[..., None])[..., 0] / math.sqrt(nd)  # (nf, nloc, nh, nnei)
        mk = mask[:, :, None, :]
        if self.smooth:
            s = sw[:, :, None, :]
            w = (w + ATTN_SHIFT) * s - ATTN_SHIFT
        else:
            w = xp.where(mk, w, xp.full_like(w, MASKED_LOGIT))
        w = softmax(xp, w, axis=-1)
        w = xp.where(mk, w, xp.zeros_like(w))
        if self.smooth:
            w = w * s
        o = xp.matmul(w[..., None, :], v)[..., 0, :]  # (nf, nloc, nh, ni)
        o = xp.reshape(o, (nf, nloc, nh * ni))
        return _layer(ni * nh, ni, True, pr)(p["head_map"], o)

    def _conv(self, p: Params, gg1: Any, g2: Any, w: Any, mask: Any) -> Any:
        """Neighbour g1 weighted by projected g2, averaged: (nf, nloc, g1_dim or g2_dim).

        w (nf, nloc, nnei): the slot weights (switch, or the mask when not smooth). With
        ``g1_out_conv``, sum_j (g2_j W) * g1_j * w_j = sum_a W[a] * (sum_j w_j g2_j[a] g1_j), a
        contraction that never forms an (nnei, g1_dim) product."""
        xp = namespace(g2)
        inv = _inv_nnei(xp, mask, g2.shape[2], self.smooth, False, g2.dtype)
        g2w = g2 * w[..., None]
        if self.g1_out_conv:
            m = xp.matmul(xp.permute_dims(g2w, (0, 1, 3, 2)), gg1)  # (nf, nloc, g2, g1)
            out = xp.sum(m * p["proj_g1g2"]["w"], axis=-2)
        else:
            proj = _layer(self.g1_dim, self.g2_dim, False, self.precision)
            out = xp.sum(g2w * proj(p["proj_g1g2"], gg1), axis=2)
        return out * inv

    def _combine(self, p: Params, terms: list[Any], name: str) -> Any:
        out = terms[0]
        if self.update_style == "res_avg":
            for t in terms[1:]:
                out = out + t
            return out / math.sqrt(len(terms))
        if self.update_style == "res_incr":
            scale = 1.0 / math.sqrt(len(terms) - 1) if len(terms) > 1 else 0.0
            for t in terms[1:]:
                out = out + scale * t
            return out
        for r, t in zip(p[f"{name}_residual"], terms[1:], strict=True):
            out = out + r * t
        return out

    def __call__(self, p: Params, g1_ext: Any, g2: Any, h2: Any, nlist: Any, mask: Any,
                 sw: Any, g1: Any = None) -> tuple[Any, Any, Any]:
        """g1_ext (nf, nall, g1_dim); g2 (nf, nloc, nnei, g2_dim); h2 (.., 3); nlist with empty
        slots pointing at atom 0; mask (nf, nloc, nnei) real slots; sw (nf, nloc, nnei).

        The update of each centre row uses only that row and ``g1_ext``, so the rows may be any
        subset of the local atoms (a chunk), with ``g1`` their own features (default: the first
        nloc rows of ``g1_ext``, i.e. all local atoms)."""
        xp = namespace(g2)
        nloc = g2.shape[1]
        pr = self.precision
        if g1 is None:
            g1 = g1_ext[:, :nloc, :]
        g1_terms, g2_terms, h2_terms = [g1], [g2], [h2]
        mlp_in = [] if self.g1_out_mlp else [g1]
        if self.g1_out_mlp:
            g1_terms.append(self._act(_layer(self.g1_dim, self.g1_dim, True, pr)(
                p["g1_self_mlp"], g1)))
        gg1 = gather_neighbors(xp, g1_ext, nlist) if self.needs_neighbor_g1 else None
        # per-slot weight of every neighbour average: the switch (0 on empty slots), or the mask
        w = sw if self.smooth else xp.astype(mask, g2.dtype)
        if self.update_chnnl_2:
            g2_terms.append(self._act(_layer(self.g2_dim, self.g2_dim, True, pr)(
                p["linear2"], g2)))
            if self.update_g2_has_g1g1:  # (g1_i * g1_j) W = g1_j (diag(g1_i) W), per atom
                wi = g1[..., :, None] * p["proj_g1g1g2"]["w"]  # (nf, nloc, g1, g2)
                g2_terms.append(xp.matmul(gg1, wi) * w[..., None])
            if self.has_attn2_map:
                aa = self._attn2_map(p["attn2g_map"], g2, h2, mask, sw)
                if self.update_g2_has_attn:
                    g2_terms.append(self.layers()["attn2_lm"](
                        p["attn2_lm"], self._attn2_apply(p["attn2_mh_apply"], aa, g2)))
                if self.update_h2:
                    h2_terms.append(self._attn2_equivariant(p["attn2_ev_apply"], aa, h2))
        if self.update_g1_has_conv:
            conv = self._conv(p, gg1, g2, w, mask)
            if self.g1_out_conv:
                g1_terms.append(conv)
            else:
                mlp_in.append(conv)
        if self.update_g1_has_grrg or self.update_g1_has_drrd:
            inv = _inv_nnei(xp, mask, g2.shape[2], self.smooth, self.use_sqrt_nnei, g2.dtype)
            hw = h2 * (w * inv)[..., None]
        if self.update_g1_has_grrg:
            mlp_in.append(symmetrize(xp, g2, hw, self.axis_neuron))
        if self.update_g1_has_drrd:
            mlp_in.append(symmetrize(xp, gg1, hw, self.axis_neuron))
        g1_terms.append(self._act(_layer(self.g1_in_dim, self.g1_dim, True, pr)(
            p["linear1"], xp.concat(mlp_in, axis=-1))))
        if self.update_g1_has_attn:
            g1_terms.append(self._local_attn(p["loc_attn"], g1, gg1, mask, sw))
        if self.update_chnnl_2:
            g2 = self._combine(p, g2_terms, "g2")
            h2 = self._combine(p, h2_terms, "h2")
        return self._combine(p, g1_terms, "g1"), g2, h2

    # ---- files -------------------------------------------------------------------------------
    def serialize(self, p: Params) -> dict:
        data: dict[str, Any] = {
            "@class": "RepformerLayer", "@version": 2,
            "rcut": self.rcut, "rcut_smth": self.rcut_smth, "sel": [self.nnei],
            "ntypes": self.ntypes, "g1_dim": self.g1_dim, "g2_dim": self.g2_dim,
            "axis_neuron": self.axis_neuron, "update_chnnl_2": self.update_chnnl_2,
            "update_g1_has_conv": self.update_g1_has_conv,
            "update_g1_has_drrd": self.update_g1_has_drrd,
            "update_g1_has_grrg": self.update_g1_has_grrg,
            "update_g1_has_attn": self.update_g1_has_attn,
            "update_g2_has_g1g1": self.update_g2_has_g1g1,
            "update_g2_has_attn": self.update_g2_has_attn,
            "update_h2": self.update_h2,
            "attn1_hidden": self.attn1_hidden, "attn1_nhead": self.attn1_nhead,
            "attn2_hidden": self.attn2_hidden, "attn2_nhead": self.attn2_nhead,
            "attn2_has_gate": self.attn2_has_gate,
            "activation_function": self.activation_function,
            "update_style": self.update_style, "smooth": self.smooth,
            "precision": canonical(self.precision), "trainable_ln": self.trainable_ln,
            "use_sqrt_nnei": self.use_sqrt_nnei, "g1_out_conv": self.g1_out_conv,
            "g1_out_mlp": self.g1_out_mlp, "ln_eps": self.ln_eps,
        }
        for key, spec in self.layers().items():
            if key == "attn2_lm":
                data[key] = spec.serialize(p[key])
            elif isinstance(spec, dict):
                data[key] = {**_attn_header(self, key),
                             **{k: s.serialize(p[key][k]) for k, s in spec.items()}}
            else:
                data[key] = spec.serialize(p[key])
        if self.update_style == "res_residual":
            data["@variables"] = {k: [to_numpy(v) for v in p[k]]
                                  for k in ("g1_residual", "g2_residual", "h2_residual")}
        return data

    @classmethod
    def deserialize(cls, data: dict, update_residual: float = 0.001,
                    update_residual_init: str = "norm") -> tuple[RepformerLayer, Params]:
        check_class(data, "RepformerLayer")
        check_version(data, "RepformerLayer", 2, 1)
        sel = data["sel"]
        kw = {k: data[k] for k in (
            "g1_dim", "g2_dim", "axis_neuron", "update_chnnl_2", "update_g1_has_conv",
            "update_g1_has_drrd", "update_g1_has_grrg", "update_g1_has_attn",
            "update_g2_has_g1g1", "update_g2_has_attn", "update_h2", "attn1_hidden",
            "attn1_nhead", "attn2_hidden", "attn2_nhead", "attn2_has_gate",
            "activation_function", "update_style", "smooth", "trainable_ln") if k in data}
        obj = cls(
            rcut=float(data["rcut"]), rcut_smth=float(data["rcut_smth"]),
            nnei=int(sum(sel)) if isinstance(sel, list) else int(sel),
            ntypes=int(data["ntypes"]), precision=canonical(data.get("precision", "float64")),
            use_sqrt_nnei=bool(data.get("use_sqrt_nnei", False)),
            g1_out_conv=bool(data.get("g1_out_conv", False)),
            g1_out_mlp=bool(data.get("g1_out_mlp", False)),
            ln_eps=float(data.get("ln_eps") or 1e-5),
            update_residual=update_residual, update_residual_init=update_residual_init, **kw)
        p: Params = {}
        for key, spec in obj.layers().items():
            if key not in data:
                raise ModelFormatError(f"RepformerLayer: missing {key!r}")
            if key == "attn2_lm":
                _, p[key] = LayerNorm.deserialize(data[key])
            elif isinstance(spec, dict):
                shift = data[key].get("attnw_shift", ATTN_SHIFT)
                if shift != ATTN_SHIFT:
                    raise ModelFormatError(f"RepformerLayer: {key} attnw_shift {shift} is not "
                                           f"supported (only {ATTN_SHIFT})")
                p[key] = {k: _layer_params(s, data[key][k], f"{key}/{k}")
                          for k, s in spec.items()}
            else:
                p[key] = _layer_params(spec, data[key], key)
        dt = to_dtype(obj.precision)
        var = data.get("@variables", {})
        for name, dims in obj.residual_dims().items():
            vals = [np.asarray(v).astype(dt) for v in var.get(name, data.get(name, []))]
            if [v.shape for v in vals] != [(d,) for d in dims]:
                raise ModelFormatError(
                    f"RepformerLayer: {name!r} has shapes {[v.shape for v in vals]}, "
                    f"expected {[(d,) for d in dims]}")
            p[name] = vals
        return obj, p


def _attn_header(layer: RepformerLayer, key: str) -> dict:
    """The non-array fields of DeePMD-kit's attention modules."""
    pr = canonical(layer.precision)
    if key == "attn2g_map":
        return {"@class": "Atten2Map", "@version": 1, "input_dim": layer.g2_dim,
                "hidden_dim": layer.attn2_hidden, "head_num": layer.attn2_nhead,
                "has_gate": layer.attn2_has_gate, "smooth": layer.smooth,
                "attnw_shift": ATTN_SHIFT, "precision": pr}
    if key == "attn2_mh_apply":
        return {"@class": "Atten2MultiHeadApply", "@version": 1, "input_dim": layer.g2_dim,
                "head_num": layer.attn2_nhead, "precision": pr}
    if key == "attn2_ev_apply":
        return {"@class": "Atten2EquiVarApply", "@version": 1, "input_dim": layer.g2_dim,
                "head_num": layer.attn2_nhead, "precision": pr}
    return {"@class": "LocalAtten", "@version": 1, "input_dim": layer.g1_dim,
            "hidden_dim": layer.attn1_hidden, "head_num": layer.attn1_nhead,
            "smooth": layer.smooth, "attnw_shift": ATTN_SHIFT, "precision": pr}


def _layer_params(spec: Layer, data: dict, where: str) -> Params:
    """Parameters of a serialized Layer, checked against the expected shape."""
    layer, p = Layer.deserialize(data)
    if (layer.in_dim, layer.out_dim) != (spec.in_dim, spec.out_dim) or \
            (p.get("b") is not None) != spec.bias:
        raise ModelFormatError(
            f"RepformerLayer: {where!r} is {layer.in_dim}x{layer.out_dim} "
            f"(bias {p.get('b') is not None}), expected {spec.in_dim}x{spec.out_dim} "
            f"(bias {spec.bias})")
    dt = to_dtype(spec.precision)
    return {k: (None if v is None else np.asarray(v).astype(dt)) for k, v in p.items()}
