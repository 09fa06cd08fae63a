"""DPA-1 descriptor ``se_atten`` / ``dpa1`` and ``se_atten_v2`` (Zhang et al., 2022).

Mixed-type neighbour list (one section of ``sel`` slots). Embedding G from the radial feature and
the type embedding (``concat``: G = N([s, T_j(, T_i)]); ``strip``: G = G_s + G_s * G_t with
G_t = N_t([T_j(, T_i)]), times s(r) when ``smooth_type_embedding``), refined by
``attn_layer`` gated self-attention layers, then D = (G^T R)(G^T R)[:M2]^T / nnei^2 as in se_e2_a,
with the centre's type embedding appended when ``concat_output_tebd``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..array_api import empty_slot_types, namespace, neighbor_types, safe_norm, to_numpy
from ..compress import Tabulation
from ..env_mat import EnvMat, pair_exclude_mask
from ..errors import ModelFormatError, check_class, check_version
from ..network import EmbeddingNet, NetworkCollection, Params, TypeEmbedNet
from ..precision import canonical, to_dtype
from ..registry import register_descriptor
from .attention import GatedAttentionLayer, NeighborGatedAttention


@register_descriptor("se_atten", "dpa1", "se_atten_v2")
@dataclass(frozen=True)
class DescrptSeAtten:
    """DPA-1. Output (nf, nloc, neuron[-1] * axis_neuron [+ tebd_dim])."""

    rcut: float
    rcut_smth: float
    sel: int
    ntypes: int
    neuron: tuple[int, ...] = (25, 50, 100)
    axis_neuron: int = 8
    tebd_dim: int = 8
    tebd_input_mode: str = "concat"
    resnet_dt: bool = False
    type_one_side: bool = False
    attn: int = 128
    attn_layer: int = 2
    attn_dotr: bool = True
    attn_mask: bool = False
    exclude_types: tuple[tuple[int, int], ...] = ()
    env_protection: float = 0.0
    set_davg_zero: bool = True
    activation_function: str = "tanh"
    scaling_factor: float = 1.0
    normalize: bool = True
    temperature: float | None = None
    trainable_ln: bool = True
    ln_eps: float = 1e-5
    smooth_type_embedding: bool = False
    concat_output_tebd: bool = True
    use_tebd_bias: bool = False
    precision: str = "float64"
    type_map: tuple[str, ...] | None = None
    trainable: bool = True
    type_name: str = "dpa1"
    type_embedding: TypeEmbedNet | None = field(default=None, compare=False)
    compress: Tabulation | None = None  # tabulated embedding (polypot compress), or None
    #: columns of the neighbour lists read (<= sel; ``narrowed``), None: sel
    list_sel: Any = None

    mixed_types = True

    def __post_init__(self) -> None:
        if self.tebd_input_mode not in ("concat", "strip"):
            raise ModelFormatError(
                f"se_atten: tebd_input_mode must be 'concat' or 'strip', got "
                f"{self.tebd_input_mode!r}"
            )
        if self.type_embedding is None:
            object.__setattr__(self, "type_embedding", TypeEmbedNet(
                self.ntypes, (self.tebd_dim,), "Linear", False, self.precision, True,
                self.use_tebd_bias, self.type_map))

    # ---- derived structure -------------------------------------------------------------------
    @property
    def nnei(self) -> int:
        return self.sel

    @property
    def dim_out(self) -> int:
        return self.neuron[-1] * self.axis_neuron + (self.tebd_dim if self.concat_output_tebd
                                                     else 0)

    @property
    def env_mat(self) -> EnvMat:
        return EnvMat(self.rcut, self.rcut_smth, self.env_protection)

    @property
    def _tebd_in(self) -> int:
        return self.tebd_dim if self.type_one_side else 2 * self.tebd_dim

    @property
    def embedding(self) -> EmbeddingNet:
        in_dim = 1 + self._tebd_in if self.tebd_input_mode == "concat" else 1
        return EmbeddingNet(in_dim, self.neuron, self.activation_function, self.resnet_dt, True,
                            self.precision)

    @property
    def embedding_strip(self) -> EmbeddingNet:
        return EmbeddingNet(self._tebd_in, self.neuron, self.activation_function, self.resnet_dt,
                            True, self.precision)

    @property
    def attention(self) -> NeighborGatedAttention:
        layer = GatedAttentionLayer(
            self.nnei, self.neuron[-1], self.attn, 1, self.attn_dotr, self.attn_mask,
            self.scaling_factor, self.normalize, self.temperature, True,
            self.smooth_type_embedding, self.trainable_ln, self.ln_eps, self.precision)
        return NeighborGatedAttention(
            (layer,) * self.attn_layer, self.nnei, self.neuron[-1], self.attn, self.attn_dotr,
            self.attn_mask, self.scaling_factor, self.normalize, self.temperature,
            self.trainable_ln, self.ln_eps, self.precision)

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.precision)
        shape = (self.ntypes, self.nnei, 4)
        p = {
            "embedding": self.embedding.init(rng),
            "type_embedding": self.type_embedding.init(rng),
            "attention": self.attention.init(rng),
            "davg": np.zeros(shape, dtype=dt),
            "dstd": np.ones(shape, dtype=dt),
        }
        if self.tebd_input_mode == "strip":
            p["embedding_strip"] = self.embedding_strip.init(rng)
        return p

    #: :meth:`narrowed` exists (with attention layers too: see there)
    narrowable = True

    def narrowed(self, widths: tuple[Any, ...]) -> DescrptSeAtten:
        """This descriptor reading neighbour lists of ``widths[0] <= sel`` columns: the first
        columns of the full list, all real neighbours among them. The result is the same as
        with the full list: every slot left out is empty for every atom, and an empty slot
        contributes a constant per (centre type, type of the frame's atom 0), since its row is
        -davg/dstd (not zero unless davg is) and its embedding sees atom 0's type; added by
        :meth:`_missing_slots`. In the attention layers an empty slot's own row only passes
        through each layer's output bias and norm (its attention weights are masked), and as
        a key it weighs nothing but adds e^-20 to the smooth softmax's denominator
        (``GatedAttentionLayer``'s ``left_out``). The width may be symbolic (``jax.export``)."""
        if len(widths) != 1:
            raise ValueError(f"{self.type_name}: {len(widths)} list widths for one mixed "
                             "section")
        return dataclasses.replace(self, list_sel=widths[0])

    # ---- forward -------------------------------------------------------------------------------
    def __call__(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any,
                 mapping: Any = None) -> Any:
        """Descriptor (nf, nloc, dim_out) from extended coords (nf, nall, 3), types, nlist."""
        xp = namespace(coord_ext)
        table = self.type_embedding(p["type_embedding"], xp)  # (ntypes + 1, tebd_dim)
        d = self.block(p, coord_ext, atype_ext, nlist, table)
        if self.concat_output_tebd:
            nf, nloc = nlist.shape[:2]
            atype = atype_ext[:, :nloc]
            emb_loc = xp.reshape(xp.take(table, xp.reshape(atype, (-1,)), axis=0),
                                 (nf, nloc, self.tebd_dim))
            d = xp.concat([d, emb_loc], axis=-1)
        return d

    def block(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any, table: Any) -> Any:
        """The descriptor without the centre's type embedding, (nf, nloc, neuron[-1] * axis),
        with the type-embedding table (ntypes + 1, tebd_dim) given (DPA-2 shares its own)."""
        xp = namespace(coord_ext)
        nf, nloc, nnei = nlist.shape
        ng = self.neuron[-1]
        atype = atype_ext[:, :nloc]
        davg, dstd = p["davg"], p["dstd"]
        if self.list_sel is not None:
            davg, dstd = davg[:, :self.list_sel], dstd[:, :self.list_sel]
        rr, sw, _ = self.env_mat(coord_ext, atype, nlist, davg, dstd)
        keep = pair_exclude_mask(xp, self.ntypes, self.exclude_types, atype_ext, nlist)
        nlist = xp.where(keep, nlist, xp.full_like(nlist, -1))
        mask = nlist >= 0
        sw = xp.where(mask[..., None], sw, xp.zeros_like(sw))
        rr = rr * xp.astype(keep, rr.dtype)[..., None]
        # empty slots: the type of atom 0 (DeePMD-kit's), so padded rows agree exactly
        tj = neighbor_types(xp, atype_ext, nlist)  # (nf, nloc, nnei)
        gr = self._sum_pairs(p, table, rr, sw, atype, tj, mask)
        if self.list_sel is not None:
            gr = gr + self._missing_slots(p, table, atype_ext, nloc)
        d = xp.matmul(gr, xp.permute_dims(gr[:, : self.axis_neuron, :], (0, 2, 1)))
        return xp.reshape(d, (nf, nloc, ng * self.axis_neuron))

    def _sum_pairs(self, p: Params, table: Any, rr: Any, sw: Any, atype: Any, tj: Any,
                   mask: Any) -> Any:
        """G^T R / nnei (nf * nloc, ng, 4) summed over the neighbour slots, after the attention
        layers. rr (nf, nloc, nnei, 4) rows; sw (.., 1) switch (0 on empty slots); atype
        (nf, nloc) centre types; tj (nf, nloc, nnei) neighbour types; mask: real slots."""
        xp = namespace(rr)
        nf, nloc, nnei = tj.shape
        ng = self.neuron[-1]
        ss = rr[..., 0:1]
        if self.tebd_input_mode == "concat" and self.compress is not None:
            # one table per (centre, neighbour) type pair: index t_i * ntypes + t_j (or t_j);
            # sum_j G^T R straight from the table (no attention layers here)
            index = tj if self.type_one_side else atype[:, :, None] * self.ntypes + tj
            gr = self.compress.contract(p["compress"]["table"], ss[..., 0], rr, index)
            return xp.reshape(gr, (nf * nloc, ng, 4)) / self.nnei
        if self.compress is not None:  # strip (compressed models have no attention layers)
            # G = G_s(s) (1 + w G_t[type pair]) straight from the tables
            ntp = table.shape[0]
            idx = tj if self.type_one_side else atype[:, :, None] * ntp + tj
            w = sw[..., 0] if self.smooth_type_embedding else None
            gr = self.compress.contract_typed(p["compress"]["table"], ss[..., 0], rr,
                                              p["compress"]["type_table"], idx, w)
            return xp.reshape(gr, (nf * nloc, ng, 4)) / self.nnei
        if self.tebd_input_mode == "concat":
            emb_j = xp.reshape(xp.take(table, xp.reshape(tj, (-1,)), axis=0),
                               (nf, nloc, nnei, self.tebd_dim))
            parts = [ss, emb_j]
            if not self.type_one_side:
                emb_loc = xp.reshape(xp.take(table, xp.reshape(atype, (-1,)), axis=0),
                                     (nf, nloc, 1, self.tebd_dim))
                parts.append(xp.broadcast_to(emb_loc, (nf, nloc, nnei, self.tebd_dim)))
            gg = self.embedding(p["embedding"], xp.concat(parts, axis=-1))
        else:
            ntp = table.shape[0]
            gg_s = self.embedding(p["embedding"], ss)
            gt_table = self.strip_type_table(p, table, xp)
            idx = tj if self.type_one_side else atype[:, :, None] * ntp + tj
            gg_t = xp.reshape(xp.take(gt_table, xp.reshape(idx, (-1,)), axis=0),
                              (nf, nloc, nnei, ng))
            if self.smooth_type_embedding:
                gg_t = gg_t * sw
            gg = gg_s * gg_t + gg_s
        return self._attend_and_sum(p, gg, rr, mask, sw)

    def _missing_slots(self, p: Params, table: Any, atype_ext: Any, nloc: Any) -> Any:
        """G^T R / nnei (nf * nloc, ng, 4) of the slots a narrowed list leaves out (columns
        list_sel .. sel): empty for every atom, each is the row -davg/dstd of its centre type
        and slot, with the type of the frame's atom 0 (``empty_slot_types``). Evaluated once per
        (centre type, that type), then picked per centre."""
        xp = namespace(p["davg"])
        nt = self.ntypes
        rows = -p["davg"] / p["dstd"]  # (ntypes, sel, 4): the rows of empty slots
        left_out = xp.astype(xp.arange(self.sel) >= self.list_sel, rows.dtype)[:, None]
        # one row of "centres" per pair (centre type c, empty-slot type e) at c * nt + e; the
        # slots kept get a zero row, so they add nothing
        dt = atype_ext.dtype
        centre = xp.asarray(np.repeat(np.arange(nt), nt), dtype=dt)
        empty = xp.asarray(np.tile(np.arange(nt), nt), dtype=dt)
        rr = xp.take(rows, centre, axis=0)[None] * left_out  # (1, nt * nt, sel, 4)
        tj = xp.broadcast_to(empty[None, :, None], (1, nt * nt, self.sel))
        sw = xp.zeros((1, nt * nt, self.sel, 1), dtype=rows.dtype)
        per_pair = self._sum_pairs(p, table, rr, sw, centre[None], tj,
                                   xp.zeros((1, nt * nt, self.sel), dtype=xp.bool))
        idx = atype_ext[:, :nloc] * nt + empty_slot_types(xp, atype_ext)[..., 0]  # (nf, nloc)
        return xp.take(per_pair, xp.reshape(idx, (-1,)), axis=0)

    def _attend_and_sum(self, p: Params, gg: Any, rr: Any, mask: Any, sw: Any) -> Any:
        """Attention layers on G (nf, nloc, nnei, ng), then G^T R / nnei: (nf * nloc, ng, 4).

        rr: (nf, nloc, nnei, 4) rows; mask: (nf, nloc, nnei) real slots; sw: (.., 1) switch."""
        xp = namespace(gg)
        nf, nloc, nnei, ng = gg.shape
        gg = xp.reshape(gg, (nf * nloc, nnei, ng))
        if self.attn_layer > 0:
            r3 = xp.reshape(rr[..., 1:4], (nf * nloc, nnei, 3))
            norm = safe_norm(xp, r3)
            unit_r = r3 / xp.maximum(norm, xp.full_like(norm, 1e-12))
            gg = self.attention(p["attention"], gg, xp.reshape(mask, (nf * nloc, nnei)), unit_r,
                                xp.reshape(sw, (nf * nloc, nnei, 1)), self.sel - nnei)
        rr2 = xp.reshape(rr, (nf * nloc, nnei, 4))
        return xp.matmul(xp.permute_dims(gg, (0, 2, 1)), rr2) / self.nnei  # (nb, ng, 4)

    def strip_type_table(self, p: Params, table: Any, xp: Any) -> Any:
        """Strip mode's type part G_t over type pairs: (ntp, ng) for one side, else
        (ntp * ntp, ng) at t_i * ntp + t_j; ``table`` (ntp, tebd_dim) the type embedding
        with its padding row (ntp = ntypes + 1)."""
        ntp = table.shape[0]
        if self.type_one_side:
            return self.embedding_strip(p["embedding_strip"], table)
        nei = xp.broadcast_to(table[None, :, :], (ntp, ntp, self.tebd_dim))
        cen = xp.broadcast_to(table[:, None, :], (ntp, ntp, self.tebd_dim))
        pair = xp.reshape(xp.concat([nei, cen], axis=-1), (ntp * ntp, 2 * self.tebd_dim))
        return self.embedding_strip(p["embedding_strip"], pair)

    # ---- files -------------------------------------------------------------------------------
    def serialize(self, p: Params) -> dict:
        data = {
            "@class": "Descriptor",
            "type": self.type_name,
            "@version": 2,
            "rcut": self.rcut,
            "rcut_smth": self.rcut_smth,
            "sel": [self.sel],
            "ntypes": self.ntypes,
            "neuron": list(self.neuron),
            "axis_neuron": self.axis_neuron,
            "tebd_dim": self.tebd_dim,
            "tebd_input_mode": self.tebd_input_mode,
            "set_davg_zero": self.set_davg_zero,
            "attn": self.attn,
            "attn_layer": self.attn_layer,
            "attn_dotr": self.attn_dotr,
            "attn_mask": self.attn_mask,
            "activation_function": self.activation_function,
            "resnet_dt": self.resnet_dt,
            "scaling_factor": self.scaling_factor,
            "normalize": self.normalize,
            "temperature": self.temperature,
            "trainable_ln": self.trainable_ln,
            "ln_eps": self.ln_eps,
            "smooth_type_embedding": self.smooth_type_embedding,
            "type_one_side": self.type_one_side,
            "concat_output_tebd": self.concat_output_tebd,
            "use_econf_tebd": False,
            "use_tebd_bias": self.use_tebd_bias,
            "type_map": None if self.type_map is None else list(self.type_map),
            "precision": canonical(self.precision),
            "embeddings": NetworkCollection(0, self.ntypes, "embedding_network",
                                            (self.embedding,)).serialize(
                {"networks": [p["embedding"]]}),
            "attention_layers": self.attention.serialize(p["attention"]),
            "env_mat": self.env_mat.serialize(),
            "type_embedding": self.type_embedding.serialize(p["type_embedding"]),
            "exclude_types": [list(x) for x in self.exclude_types],
            "env_protection": self.env_protection,
            "@variables": {"davg": to_numpy(p["davg"]), "dstd": to_numpy(p["dstd"])},
            "trainable": self.trainable,
            "spin": None,
        }
        if self.type_name == "se_atten_v2":
            del data["tebd_input_mode"], data["smooth_type_embedding"]
        if self.tebd_input_mode == "strip":
            data["embeddings_strip"] = NetworkCollection(
                0, self.ntypes, "embedding_network", (self.embedding_strip,)
            ).serialize({"networks": [p["embedding_strip"]]})
        if self.compress is not None:  # polypot-only key, see polypot.model.compress
            data["compress"] = self.compress.serialize(p["compress"])
        return data

    def _with_compress(self, data: dict, params: Params, dt: Any) -> DescrptSeAtten:
        """This descriptor with the ``compress`` entry ``data`` (its arrays go to ``params``)."""
        spec, params["compress"] = Tabulation.deserialize(data, dt)
        strip = self.tebd_input_mode == "strip"
        ntab = 1 if strip else self.ntypes ** (1 if self.type_one_side else 2)
        if self.attn_layer != 0 or spec.ntab != ntab or spec.width != self.neuron[-1] \
                or strip != ("type_table" in params["compress"]):
            raise ModelFormatError(
                f"dpa1: compress table ({spec.ntab} tables of width {spec.width}) does not fit "
                f"the descriptor (attn_layer {self.attn_layer}, {self.tebd_input_mode} mode)"
            )
        return dataclasses.replace(self, compress=spec)

    @classmethod
    def deserialize(cls, data: dict) -> tuple[DescrptSeAtten, Params]:
        check_class(data, "Descriptor")
        check_version(data, "dpa1 descriptor", 2, 1)
        if data.get("use_econf_tebd", False):
            raise ModelFormatError("dpa1: use_econf_tebd is not supported yet")
        if data.get("spin") is not None:
            raise ModelFormatError("dpa1: spin models are not supported")
        type_name = data.get("type", "dpa1")
        v2 = type_name == "se_atten_v2"
        _, ep = NetworkCollection.deserialize(data["embeddings"])
        _, ap = NeighborGatedAttention.deserialize(data["attention_layers"])
        tebd, tp = TypeEmbedNet.deserialize(data["type_embedding"])
        precision = canonical(data.get("precision", "float64"))
        dt = to_dtype(precision)
        sel = data["sel"]
        sel = int(sum(sel)) if isinstance(sel, list) else int(sel)
        tm = data.get("type_map")
        obj = cls(
            rcut=float(data["rcut"]), rcut_smth=float(data["rcut_smth"]), sel=sel,
            ntypes=int(data["ntypes"]), neuron=tuple(int(n) for n in data["neuron"]),
            axis_neuron=int(data["axis_neuron"]), tebd_dim=int(data["tebd_dim"]),
            tebd_input_mode="strip" if v2 else data.get("tebd_input_mode", "concat"),
            resnet_dt=bool(data.get("resnet_dt", False)),
            type_one_side=bool(data.get("type_one_side", False)),
            attn=int(data["attn"]), attn_layer=int(data["attn_layer"]),
            attn_dotr=bool(data.get("attn_dotr", True)),
            attn_mask=bool(data.get("attn_mask", False)),
            exclude_types=tuple(tuple(int(t) for t in x) for x in data.get("exclude_types", [])),
            env_protection=float(data.get("env_protection", 0.0)),
            set_davg_zero=bool(data.get("set_davg_zero", True)),
            activation_function=data.get("activation_function", "tanh"),
            scaling_factor=float(data.get("scaling_factor", 1.0)),
            normalize=bool(data.get("normalize", True)), temperature=data.get("temperature"),
            trainable_ln=bool(data.get("trainable_ln", True)),
            ln_eps=float(data.get("ln_eps") or 1e-5),
            smooth_type_embedding=True if v2 else bool(data.get("smooth_type_embedding", False)),
            concat_output_tebd=bool(data.get("concat_output_tebd", True)),
            use_tebd_bias=bool(data.get("use_tebd_bias", False)), precision=precision,
            type_map=None if tm is None else tuple(tm),
            trainable=bool(data.get("trainable", True)), type_name=type_name,
            type_embedding=tebd,
        )
        var = data["@variables"]
        params: Params = {
            "embedding": ep["networks"][0],
            "type_embedding": tp,
            "attention": ap,
            "davg": np.asarray(var["davg"]).astype(dt),
            "dstd": np.asarray(var["dstd"]).astype(dt),
        }
        if obj.tebd_input_mode == "strip":
            _, sp = NetworkCollection.deserialize(data["embeddings_strip"])
            params["embedding_strip"] = sp["networks"][0]
        if data.get("compress"):
            obj = obj._with_compress(data["compress"], params, dt)
        want = (obj.ntypes, obj.nnei, 4)
        for k in ("davg", "dstd"):
            if params[k].shape != want:
                raise ModelFormatError(f"dpa1: '{k}' has shape {params[k].shape}, expected {want}")
        return obj, params
