"""Three-body embedding block with type embedding (DeePMD-kit ``se_e3_tebd``; DPA-2's
optional ``three_body`` part of repinit).

For every pair of neighbours (j, k) of a centre: the angular feature
c_jk = R_j[1:4] . R_k[1:4] of the normalised environment rows, an embedding G(c_jk, T_j, T_k)
(``concat``) or G_s(c_jk) (1 + G_t(T_j, T_k)) (``strip``), and the descriptor
D = sum_jk c_jk G_jk / nnei^2, (nf, nloc, neuron[-1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array_api import namespace, neighbor_types
from ..env_mat import EnvMat, pair_exclude_mask
from ..network import EmbeddingNet, Params, activation
from ..precision import to_dtype


@dataclass(frozen=True)
class SeTTebdBlock:
    """Three-body block. Output (nf, nloc, neuron[-1])."""

    rcut: float
    rcut_smth: float
    sel: int
    ntypes: int
    neuron: tuple[int, ...] = (2, 4, 8)
    tebd_dim: int = 8
    tebd_input_mode: str = "concat"
    resnet_dt: bool = False
    set_davg_zero: bool = True
    activation_function: str = "tanh"
    smooth: bool = True
    exclude_types: tuple[tuple[int, int], ...] = ()
    env_protection: float = 0.0
    precision: str = "float64"

    @property
    def nnei(self) -> int:
        return self.sel

    @property
    def dim_out(self) -> int:
        return self.neuron[-1]

    @property
    def env_mat(self) -> EnvMat:
        return EnvMat(self.rcut, self.rcut_smth, self.env_protection)

    @property
    def embedding(self) -> EmbeddingNet:
        in_dim = 1 + 2 * self.tebd_dim if self.tebd_input_mode == "concat" else 1
        return EmbeddingNet(in_dim, self.neuron, self.activation_function, self.resnet_dt, True,
                            self.precision)

    @property
    def embedding_strip(self) -> EmbeddingNet:
        return EmbeddingNet(2 * self.tebd_dim, self.neuron, self.activation_function,
                            self.resnet_dt, True, self.precision)

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.precision)
        shape = (self.ntypes, self.nnei, 4)
        p = {"embedding": self.embedding.init(rng), "davg": np.zeros(shape, dtype=dt),
             "dstd": np.ones(shape, dtype=dt)}
        if self.tebd_input_mode == "strip":
            p["embedding_strip"] = self.embedding_strip.init(rng)
        return p

    def __call__(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any, table: Any) -> Any:
        """coord_ext (nf, nall, 3), atype_ext (nf, nall), nlist (nf, nloc, nnei), type-embedding
        table (ntypes + 1, tebd_dim) with its padding row -> (nf, nloc, neuron[-1])."""
        xp = namespace(coord_ext)
        nf, nloc, nnei = nlist.shape
        atype = atype_ext[:, :nloc]
        rr, sw, _ = self.env_mat(coord_ext, atype, nlist, p["davg"], p["dstd"])
        keep = pair_exclude_mask(xp, self.ntypes, self.exclude_types, atype_ext, nlist)
        mask = (nlist >= 0) & keep
        sw = xp.where(mask[..., None], sw, xp.zeros_like(sw))
        rr = rr * xp.astype(keep, rr.dtype)[..., None]
        r3 = rr[..., 1:]
        cos = xp.matmul(r3, xp.permute_dims(r3, (0, 1, 3, 2)))  # (nf, nloc, nnei, nnei)
        ntp = table.shape[0]
        if self.tebd_input_mode == "concat":  # empty and excluded slots: atom 0's type
            gg = self._concat_embedding(p["embedding"], cos, table, neighbor_types(
                xp, atype_ext, xp.where(mask, nlist, xp.full_like(nlist, -1))))
        else:
            gg_s = self.embedding(p["embedding"], cos[..., None])
            tj = neighbor_types(xp, atype_ext, nlist)
            tj = xp.where(mask, tj, xp.full_like(tj, ntp - 1))  # empty slots: padding type
            left = xp.broadcast_to(table[:, None, :], (ntp, ntp, self.tebd_dim))
            right = xp.broadcast_to(table[None, :, :], (ntp, ntp, self.tebd_dim))
            pairs = xp.reshape(xp.concat([left, right], axis=-1), (ntp * ntp, 2 * self.tebd_dim))
            gt_table = self.embedding_strip(p["embedding_strip"], pairs)
            idx = tj[:, :, :, None] * ntp + tj[:, :, None, :]
            gg_t = xp.reshape(xp.take(gt_table, xp.reshape(idx, (-1,)), axis=0),
                              (nf, nloc, nnei, nnei, self.neuron[-1]))
            if self.smooth:
                s = sw[..., 0]
                gg_t = gg_t * s[:, :, :, None, None] * s[:, :, None, :, None]
            gg = gg_s * gg_t + gg_s
        out = xp.sum(xp.reshape(cos, (nf, nloc, nnei * nnei, 1))
                     * xp.reshape(gg, (nf, nloc, nnei * nnei, self.neuron[-1])), axis=2)
        return out / float(nnei * nnei)

    def _concat_embedding(self, p: Params, cos: Any, table: Any, tj: Any) -> Any:
        """G(c_jk, T_j, T_k) (nf, nloc, nnei, nnei, neuron[-1]); tj (nf, nloc, nnei) the slots'
        types. The first layer's input [c, T_j, T_k] is never formed: its product with the
        weights is c w_0 + (T W_1)[t_j] + (T W_2)[t_k], the last two looked up per slot."""
        xp = namespace(cos)
        net = self.embedding
        first, rest = net.layers[0], list(zip(net.layers[1:], p["layers"][1:], strict=True))
        p0 = p["layers"][0]
        t = self.tebd_dim
        nf, nloc, nnei = tj.shape
        if first.resnet and first.out_dim in (first.in_dim, 2 * first.in_dim):  # skip: x needed
            emb = xp.reshape(xp.take(table, xp.reshape(tj, (-1,)), axis=0), (nf, nloc, nnei, t))
            shape = (nf, nloc, nnei, nnei, t)
            x = xp.concat([cos[..., None], xp.broadcast_to(emb[:, :, :, None, :], shape),
                           xp.broadcast_to(emb[:, :, None, :, :], shape)], axis=-1)
            return net(p, x)
        n1 = first.out_dim

        def per_slot(w: Any) -> Any:
            proj = xp.matmul(table, w)  # (ntypes + 1, n1)
            return xp.reshape(xp.take(proj, xp.reshape(tj, (-1,)), axis=0), (nf, nloc, nnei, n1))

        z = (cos[..., None] * p0["w"][0, :] + per_slot(p0["w"][1:1 + t, :])[:, :, :, None, :]
             + per_slot(p0["w"][1 + t:, :])[:, :, None, :, :])
        if p0.get("b") is not None:
            z = z + p0["b"]
        y = activation(first.activation_function, z)
        if p0.get("idt") is not None:
            y = y * p0["idt"]
        for layer, lp in rest:
            y = layer(lp, y)
        return y
