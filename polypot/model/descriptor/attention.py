"""Gated self-attention over the neighbours of each atom (DPA-1, Zhang et al. 2022).

Per centre, rows X (nnei, M): Q, K, V from one projection, optionally L2-normalised;
weights softmax(Q K^T * scale) (smooth: shifted and multiplied by s_j s_k; otherwise masked);
gated by r_j . r_k when ``dotr``; X <- LayerNorm(X + (A V) W_out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array_api import l2_normalize, namespace, softmax, softmax_with_constants
from ..errors import check_class, check_version
from ..network import Layer, LayerNorm, Params
from ..precision import canonical

ATTN_SHIFT = 20.0
# stands in for -inf on masked keys: same weights (exp underflows to 0), but an atom with no
# neighbours gets finite (then zeroed) weights instead of NaN, so gradients stay finite
MASKED_LOGIT = -1e30


@dataclass(frozen=True)
class GatedAttentionLayer:
    """One attention block with residual and layer norm. Input/output (nb, nnei, embed_dim)."""

    nnei: int
    embed_dim: int
    hidden_dim: int
    num_heads: int = 1
    dotr: bool = False
    do_mask: bool = False
    scaling_factor: float = 1.0
    normalize: bool = True
    temperature: float | None = None
    bias: bool = True
    smooth: bool = True
    trainable_ln: bool = True
    ln_eps: float = 1e-5
    precision: str = "float64"

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def scaling(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        return (self.head_dim * self.scaling_factor) ** -0.5

    @property
    def in_proj(self) -> Layer:
        return Layer(self.embed_dim, 3 * self.hidden_dim, "none", self.bias, False, False,
                     self.precision)

    @property
    def out_proj(self) -> Layer:
        return Layer(self.hidden_dim, self.embed_dim, "none", self.bias, False, False,
                     self.precision)

    @property
    def norm(self) -> LayerNorm:
        return LayerNorm(self.embed_dim, self.ln_eps, self.trainable_ln, self.precision)

    def init(self, rng: np.random.Generator) -> Params:
        return {"in_proj": self.in_proj.init(rng), "out_proj": self.out_proj.init(rng),
                "norm": self.norm.init(rng)}

    def __call__(self, p: Params, x: Any, mask: Any, unit_r: Any, sw: Any,
                 left_out: Any = 0) -> Any:
        """x (nb, nnei, M); mask (nb, nnei) bool; unit_r (nb, nnei, 3); sw (nb, nnei, 1).

        ``left_out``: empty slots of every row not passed (a narrowed list, nnei columns of
        ``self.nnei``; may be symbolic). They change nothing but the smooth softmax's
        denominator, where each adds e^-ATTN_SHIFT (masked keys weigh exactly 0 otherwise)."""
        xp = namespace(x)
        nb, nnei = x.shape[0], x.shape[1]
        h, hd = self.num_heads, self.head_dim
        w_in, b_in = p["in_proj"]["w"], p["in_proj"].get("b")

        def heads(i: int) -> Any:
            # Q, K, V as three products with column blocks of the projection, not slices of
            # one product: slicing made the backward pass pad and add three (rows, 3 * hd)
            # cotangents
            t = xp.matmul(x, w_in[:, i * hd:(i + 1) * hd])
            if b_in is not None:
                t = t + b_in[i * hd:(i + 1) * hd]
            return xp.permute_dims(xp.reshape(t, (nb, nnei, h, hd)), (0, 2, 1, 3))

        q, k, v = heads(0), heads(1), heads(2)
        if self.normalize:
            q, k, v = l2_normalize(xp, q), l2_normalize(xp, k), l2_normalize(xp, v)
        q = q * self.scaling
        w = xp.matmul(q, xp.permute_dims(k, (0, 1, 3, 2)))  # (nb, h, nnei, nnei)
        if self.smooth:
            s = xp.reshape(sw, (nb, 1, nnei))
            pair = s[:, :, :, None] * s[:, :, None, :]
            w = (w + ATTN_SHIFT) * pair - ATTN_SHIFT
            # an empty key's logit is -ATTN_SHIFT whatever its row
            w = (softmax(xp, w, axis=-1) if isinstance(left_out, int) and left_out == 0
                 else softmax_with_constants(xp, w, left_out, -ATTN_SHIFT))
        else:
            w = xp.where(mask[:, None, None, :], w, xp.full_like(w, MASKED_LOGIT))
            w = softmax(xp, w, axis=-1)
        w = xp.where(mask[:, None, :, None], w, xp.zeros_like(w))
        if self.smooth:
            w = w * pair
        if self.dotr:
            gate = xp.matmul(unit_r, xp.permute_dims(unit_r, (0, 2, 1)))
            w = w * gate[:, None, :, :]
        o = xp.matmul(w, v)
        o = xp.reshape(xp.permute_dims(o, (0, 2, 1, 3)), (nb, nnei, self.hidden_dim))
        return self.norm(p["norm"], x + self.out_proj(p["out_proj"], o))

    def serialize(self, p: Params) -> dict:
        common = {
            "nnei": self.nnei, "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim,
            "dotr": self.dotr, "do_mask": self.do_mask, "scaling_factor": self.scaling_factor,
            "normalize": self.normalize, "temperature": self.temperature,
            "precision": canonical(self.precision),
        }
        return {
            **common,
            "trainable_ln": self.trainable_ln,
            "ln_eps": self.ln_eps,
            "attention_layer": {
                **common,
                "num_heads": self.num_heads,
                "bias": self.bias,
                "smooth": self.smooth,
                "in_proj": self.in_proj.serialize(p["in_proj"]),
                "out_proj": self.out_proj.serialize(p["out_proj"]),
            },
            "attn_layer_norm": self.norm.serialize(p["norm"]),
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[GatedAttentionLayer, Params]:
        att = data["attention_layer"]
        _, pin = Layer.deserialize(att["in_proj"])
        _, pout = Layer.deserialize(att["out_proj"])
        ln, pln = LayerNorm.deserialize(data["attn_layer_norm"])
        obj = cls(
            nnei=int(att["nnei"]), embed_dim=int(att["embed_dim"]),
            hidden_dim=int(att["hidden_dim"]), num_heads=int(att.get("num_heads", 1)),
            dotr=bool(att.get("dotr", False)), do_mask=bool(att.get("do_mask", False)),
            scaling_factor=float(att.get("scaling_factor", 1.0)),
            normalize=bool(att.get("normalize", True)), temperature=att.get("temperature"),
            bias=bool(att.get("bias", True)), smooth=bool(att.get("smooth", True)),
            trainable_ln=bool(data.get("trainable_ln", True)), ln_eps=ln.eps,
            precision=canonical(att.get("precision", "float64")),
        )
        return obj, {"in_proj": pin, "out_proj": pout, "norm": pln}


@dataclass(frozen=True)
class NeighborGatedAttention:
    """A stack of :class:`GatedAttentionLayer` (``attn_layer`` of them)."""

    layers: tuple[GatedAttentionLayer, ...]
    nnei: int
    embed_dim: int
    hidden_dim: int
    dotr: bool
    do_mask: bool
    scaling_factor: float
    normalize: bool
    temperature: float | None
    trainable_ln: bool
    ln_eps: float
    precision: str

    def init(self, rng: np.random.Generator) -> Params:
        return {"layers": [layer.init(rng) for layer in self.layers]}

    def __call__(self, p: Params, x: Any, mask: Any, unit_r: Any, sw: Any,
                 left_out: Any = 0) -> Any:
        for layer, lp in zip(self.layers, p["layers"], strict=True):
            x = layer(lp, x, mask, unit_r, sw, left_out)
        return x

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "NeighborGatedAttention",
            "@version": 1,
            "layer_num": len(self.layers),
            "nnei": self.nnei,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "dotr": self.dotr,
            "do_mask": self.do_mask,
            "scaling_factor": self.scaling_factor,
            "normalize": self.normalize,
            "temperature": self.temperature,
            "trainable_ln": self.trainable_ln,
            "ln_eps": self.ln_eps,
            "precision": canonical(self.precision),
            "attention_layers": [
                layer.serialize(lp) for layer, lp in zip(self.layers, p["layers"], strict=True)
            ],
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[NeighborGatedAttention, Params]:
        check_class(data, "NeighborGatedAttention")
        check_version(data, "NeighborGatedAttention", 1)
        pairs = [GatedAttentionLayer.deserialize(d) for d in data["attention_layers"]]
        obj = cls(
            layers=tuple(layer for layer, _ in pairs),
            nnei=int(data["nnei"]), embed_dim=int(data["embed_dim"]),
            hidden_dim=int(data["hidden_dim"]), dotr=bool(data.get("dotr", False)),
            do_mask=bool(data.get("do_mask", False)),
            scaling_factor=float(data.get("scaling_factor", 1.0)),
            normalize=bool(data.get("normalize", True)), temperature=data.get("temperature"),
            trainable_ln=bool(data.get("trainable_ln", True)),
            ln_eps=float(data.get("ln_eps") or 1e-5),
            precision=canonical(data.get("precision", "float64")),
        )
        return obj, {"layers": [lp for _, lp in pairs]}
