"""DPA-2 descriptor ``dpa2`` (Zhang et al., npj Comput. Mater. 10, 293, 2024).

1. ``repinit``: a DPA-1 block without attention on (rcut, nsel) of the repinit section, plus an
   optional three-body block; mapped to ``g1_dim`` by ``g1_shape_tranform`` (DeePMD-kit's
   spelling) and optionally added to a projection of the centre's type embedding.
2. ``repformer``: ``nlayers`` :class:`~.repformer.RepformerLayer` s on a smaller (rcut, nsel); the
   local atoms' g1 reaches the extended (ghost) atoms through ``mapping`` before every layer.
3. Output g1 (nf, nloc, g1_dim), with the centre's type embedding appended when
   ``concat_output_tebd``.

The neighbour list given to the model is that of repinit (its rcut and nsel) and must be sorted
by distance, as :mod:`polypot.neighbor` builds it: the smaller blocks take its first columns and
drop the pairs beyond their own rcut.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...kernels import find_kernel
from ..array_api import gather_neighbors, namespace, safe_norm, to_numpy
from ..compress import Tabulation
from ..env_mat import EnvMat, pair_exclude_mask
from ..errors import ModelFormatError, check_class, check_version
from ..network import Layer, NetworkCollection, Params, TypeEmbedNet, activation
from ..precision import canonical, to_dtype
from ..registry import register_descriptor
from .repformer import RepformerLayer
from .se_atten import DescrptSeAtten
from .se_t_tebd import SeTTebdBlock


@dataclass(frozen=True)
class RepinitArgs:
    """The ``repinit`` section (DeePMD-kit's keys and defaults)."""

    rcut: float
    rcut_smth: float
    nsel: int
    neuron: tuple[int, ...] = (25, 50, 100)
    axis_neuron: int = 16
    tebd_dim: int = 8
    tebd_input_mode: str = "concat"
    set_davg_zero: bool = True
    activation_function: str = "tanh"
    resnet_dt: bool = False
    type_one_side: bool = False
    use_three_body: bool = False
    three_body_neuron: tuple[int, ...] = (2, 4, 8)
    three_body_sel: int = 40
    three_body_rcut: float = 4.0
    three_body_rcut_smth: float = 0.5

    def serialize(self) -> dict:
        d = dataclasses.asdict(self)
        d["neuron"], d["three_body_neuron"] = list(self.neuron), list(self.three_body_neuron)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> RepinitArgs:
        return cls(**_known(cls, data, "repinit", {"neuron", "three_body_neuron"}))


@dataclass(frozen=True)
class RepformerArgs:
    """The ``repformer`` section (DeePMD-kit's keys and defaults)."""

    rcut: float
    rcut_smth: float
    nsel: int
    nlayers: int = 3
    g1_dim: int = 128
    g2_dim: int = 16
    axis_neuron: int = 4
    direct_dist: bool = False
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
    set_davg_zero: bool = True
    trainable_ln: bool = True
    use_sqrt_nnei: bool = True
    g1_out_conv: bool = True
    g1_out_mlp: bool = True
    ln_eps: float = 1e-5

    def serialize(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RepformerArgs:
        d = _known(cls, data, "repformer", set())
        if d.get("ln_eps") is None:
            d.pop("ln_eps", None)
        return cls(**d)


def _known(cls: type, data: dict, where: str, tuples: set[str]) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelFormatError(f"dpa2: unknown {where} keys {unknown}")
    for need in ("rcut", "rcut_smth", "nsel"):
        if need not in data:
            raise ModelFormatError(f"dpa2: {where} needs {need!r}")
    return {k: (tuple(int(x) for x in v) if k in tuples else v) for k, v in data.items()}


def sub_nlist(xp: Any, coord_ext: Any, nlist: Any, rcut: float, nsel: int) -> Any:
    """The first ``nsel`` columns of a distance-sorted ``nlist`` (nf, nloc, nnei), with the
    neighbours farther than ``rcut`` emptied (-1); padded with -1 if nnei < nsel."""
    nf, nloc, nnei = nlist.shape
    if nnei < nsel:
        nlist = xp.concat([nlist, xp.full((nf, nloc, nsel - nnei), -1, dtype=nlist.dtype)],
                          axis=-1)
    nl = nlist[:, :, :nsel]
    mask = nl >= 0
    safe = xp.where(mask, nl, xp.zeros_like(nl))
    diff = gather_neighbors(xp, coord_ext, safe) - coord_ext[:, :nloc, None, :]
    inside = xp.sum(diff * diff, axis=-1) <= rcut * rcut
    return xp.where(mask & inside, nl, xp.full_like(nl, -1))


def to_extended(xp: Any, x: Any, mapping: Any) -> Any:
    """Rows of the local atoms x (nf, nloc, d) copied to the extended atoms (nf, nall, d)."""
    safe = xp.where(mapping >= 0, mapping, xp.zeros_like(mapping))
    return gather_neighbors(xp, x, safe[:, :, None])[:, :, 0, :]


@dataclass(frozen=True)
class RepformerBlock:
    """The repformer stack on its own neighbour list: g1 (nf, nloc, g1_dim) -> g1."""

    args: RepformerArgs
    ntypes: int
    smooth: bool = True
    exclude_types: tuple[tuple[int, int], ...] = ()
    env_protection: float = 0.0
    precision: str = "float64"

    @property
    def nnei(self) -> int:
        return self.args.nsel

    @property
    def rcut(self) -> float:
        return self.args.rcut

    @property
    def set_davg_zero(self) -> bool:
        return self.args.set_davg_zero

    @property
    def env_mat(self) -> EnvMat:
        return EnvMat(self.args.rcut, self.args.rcut_smth, self.env_protection)

    @property
    def g2_embd(self) -> Layer:
        return Layer(1, self.args.g2_dim, "none", True, False, False, self.precision)

    @property
    def layers(self) -> tuple[RepformerLayer, ...]:
        a = self.args
        common = {k: getattr(a, k) for k in (
            "g1_dim", "g2_dim", "axis_neuron", "update_g1_has_conv", "update_g1_has_drrd",
            "update_g1_has_grrg", "update_g1_has_attn", "update_g2_has_g1g1",
            "update_g2_has_attn", "update_h2", "attn1_hidden", "attn1_nhead", "attn2_hidden",
            "attn2_nhead", "attn2_has_gate", "activation_function", "update_style",
            "update_residual", "update_residual_init", "trainable_ln", "use_sqrt_nnei",
            "g1_out_conv", "g1_out_mlp", "ln_eps")}
        return tuple(
            RepformerLayer(rcut=a.rcut, rcut_smth=a.rcut_smth, nnei=a.nsel, ntypes=self.ntypes,
                           update_chnnl_2=i != a.nlayers - 1, smooth=self.smooth,
                           precision=self.precision, **common)
            for i in range(a.nlayers))

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.precision)
        shape = (self.ntypes, self.nnei, 4)
        return {"g2_embd": self.g2_embd.init(rng),
                "layers": [layer.init(rng) for layer in self.layers],
                "davg": np.zeros(shape, dtype=dt), "dstd": np.ones(shape, dtype=dt)}

    def __call__(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any, g1: Any,
                 mapping: Any) -> Any:
        """g1 (nf, nloc, g1_dim) of the local atoms after every layer."""
        xp = namespace(coord_ext)
        nloc = nlist.shape[1]
        atype = atype_ext[:, :nloc]
        keep = pair_exclude_mask(xp, self.ntypes, self.exclude_types, atype_ext, nlist)
        nlist = xp.where(keep, nlist, xp.full_like(nlist, -1))
        rr, sw, mask = self.env_mat(coord_ext, atype, nlist, p["davg"], p["dstd"])
        sw = sw[..., 0]
        safe = xp.where(mask, nlist, xp.zeros_like(nlist))
        act = self.args.activation_function
        g1 = activation(act, g1)
        if self.args.direct_dist:
            diff = gather_neighbors(xp, coord_ext, safe) - coord_ext[:, :nloc, None, :]
            diff = diff * xp.astype(mask, diff.dtype)[..., None]
            g2, h2 = safe_norm(xp, diff) / self.rcut, diff / self.rcut
        else:
            g2, h2 = rr[..., :1], rr[..., 1:]
        g2 = activation(act, self.g2_embd(p["g2_embd"], g2))
        # a backend may run each layer chunk by chunk of centre rows (polypot.kernels): the
        # update of a row needs only that row and the extended g1
        rows = find_kernel("row_chunks", xp)
        for layer, lp in zip(self.layers, p["layers"], strict=True):
            g1_ext = to_extended(xp, g1, mapping)
            if rows is None:
                g1, g2, h2 = layer(lp, g1_ext, g2, h2, safe, mask, sw)
            else:
                g1, g2, h2 = rows(
                    lambda ge, g, g_2, h, nl, m, s, lp=lp, layer=layer: layer(
                        lp, ge, g_2, h, nl, m, s, g1=g),
                    (g1_ext,), (g1, g2, h2, safe, mask, sw), self.nnei)
        return g1

    def serialize(self, p: Params) -> dict:
        return {
            "g2_embd": self.g2_embd.serialize(p["g2_embd"]),
            "repformer_layers": [layer.serialize(lp)
                                 for layer, lp in zip(self.layers, p["layers"], strict=True)],
            "env_mat": self.env_mat.serialize(),
            "@variables": {"davg": to_numpy(p["davg"]), "dstd": to_numpy(p["dstd"])},
        }

    def deserialize_params(self, data: dict) -> Params:
        dt = to_dtype(self.precision)
        _, g2p = Layer.deserialize(data["g2_embd"])
        if g2p["w"].shape != (1, self.args.g2_dim):
            raise ModelFormatError(f"dpa2: g2_embd has shape {g2p['w'].shape}, expected "
                                   f"(1, {self.args.g2_dim})")
        layers = data["repformer_layers"]
        if len(layers) != self.args.nlayers:
            raise ModelFormatError(f"dpa2: {len(layers)} repformer layers in the file, "
                                   f"repformer_args says nlayers {self.args.nlayers}")
        lps = []
        for i, (spec, ld) in enumerate(zip(self.layers, layers, strict=True)):
            got, lp = RepformerLayer.deserialize(ld, self.args.update_residual,
                                                 self.args.update_residual_init)
            if got != spec:
                raise ModelFormatError(f"dpa2: repformer layer {i} does not match "
                                       f"repformer_args (got {got}, expected {spec})")
            lps.append(lp)
        return {"g2_embd": {k: None if v is None else v.astype(dt) for k, v in g2p.items()},
                "layers": lps, **_stats(data, "repformer", (self.ntypes, self.nnei, 4), dt)}


def _stats(data: dict, where: str, shape: tuple[int, ...], dt: Any) -> Params:
    var = data["@variables"]
    out = {k: np.asarray(var[k]).astype(dt) for k in ("davg", "dstd")}
    for k, v in out.items():
        if v.shape != shape:
            raise ModelFormatError(f"dpa2: {where} '{k}' has shape {v.shape}, expected {shape}")
    return out


@register_descriptor("dpa2")
@dataclass(frozen=True)
class DescrptDPA2:
    """DPA-2. Output (nf, nloc, g1_dim [+ tebd_dim])."""

    ntypes: int
    repinit: RepinitArgs
    repformer: RepformerArgs
    concat_output_tebd: bool = True
    precision: str = "float64"
    smooth: bool = True
    exclude_types: tuple[tuple[int, int], ...] = ()
    env_protection: float = 0.0
    trainable: bool = True
    add_tebd_to_repinit_out: bool = False
    use_tebd_bias: bool = False
    type_map: tuple[str, ...] | None = None
    type_name: str = "dpa2"
    type_embedding: TypeEmbedNet | None = field(default=None, compare=False)
    #: tabulated repinit embedding (``polypot compress``; polypot-only ``compress`` key), or None
    repinit_compress: Tabulation | None = None

    mixed_types = True
    message_passing = True  # needs ``mapping``: features move to ghost atoms between layers

    def __post_init__(self) -> None:
        ri, rf = self.repinit, self.repformer
        if not (ri.rcut > rf.rcut and ri.nsel > rf.nsel):
            raise ModelFormatError(
                f"dpa2: repinit rcut/nsel ({ri.rcut}, {ri.nsel}) must be larger than "
                f"repformer's ({rf.rcut}, {rf.nsel})")
        if ri.use_three_body and not (ri.three_body_rcut <= ri.rcut
                                      and ri.three_body_sel <= ri.nsel):
            raise ModelFormatError(
                f"dpa2: three_body rcut/sel ({ri.three_body_rcut}, {ri.three_body_sel}) must "
                f"not exceed repinit's ({ri.rcut}, {ri.nsel})")
        if self.type_embedding is None:
            object.__setattr__(self, "type_embedding", TypeEmbedNet(
                self.ntypes, (ri.tebd_dim,), "Linear", False, self.precision, True,
                self.use_tebd_bias, self.type_map))

    # ---- structure ---------------------------------------------------------------------------
    @property
    def rcut(self) -> float:
        return self.repinit.rcut

    @property
    def rcut_smth(self) -> float:
        return self.repinit.rcut_smth

    @property
    def sel(self) -> int:
        return self.repinit.nsel

    @property
    def nnei(self) -> int:
        return self.repinit.nsel

    @property
    def tebd_dim(self) -> int:
        return self.repinit.tebd_dim

    @property
    def dim_out(self) -> int:
        return self.repformer.g1_dim + (self.tebd_dim if self.concat_output_tebd else 0)

    @property
    def repinit_block(self) -> DescrptSeAtten:
        a = self.repinit
        return DescrptSeAtten(
            rcut=a.rcut, rcut_smth=a.rcut_smth, sel=a.nsel, ntypes=self.ntypes,
            neuron=a.neuron, axis_neuron=a.axis_neuron, tebd_dim=a.tebd_dim,
            tebd_input_mode=a.tebd_input_mode, resnet_dt=a.resnet_dt,
            type_one_side=a.type_one_side, attn_layer=0, exclude_types=self.exclude_types,
            env_protection=self.env_protection, set_davg_zero=a.set_davg_zero,
            activation_function=a.activation_function, smooth_type_embedding=self.smooth,
            concat_output_tebd=False, precision=self.precision, type_map=self.type_map,
            type_embedding=self.type_embedding, compress=self.repinit_compress)

    @property
    def three_body_block(self) -> SeTTebdBlock | None:
        a = self.repinit
        if not a.use_three_body:
            return None
        return SeTTebdBlock(
            rcut=a.three_body_rcut, rcut_smth=a.three_body_rcut_smth, sel=a.three_body_sel,
            ntypes=self.ntypes, neuron=a.three_body_neuron, tebd_dim=a.tebd_dim,
            tebd_input_mode=a.tebd_input_mode, resnet_dt=a.resnet_dt,
            set_davg_zero=a.set_davg_zero, activation_function=a.activation_function,
            smooth=self.smooth, exclude_types=self.exclude_types,
            env_protection=self.env_protection, precision=self.precision)

    @property
    def repformer_block(self) -> RepformerBlock:
        return RepformerBlock(self.repformer, self.ntypes, self.smooth, self.exclude_types,
                              self.env_protection, self.precision)

    @property
    def repinit_out_dim(self) -> int:
        n = self.repinit.neuron[-1] * self.repinit.axis_neuron
        tb = self.three_body_block
        return n + (tb.dim_out if tb is not None else 0)

    @property
    def g1_shape_tranform(self) -> Layer | None:
        """Linear map repinit -> g1_dim; None (identity) when the widths agree."""
        if self.repinit_out_dim == self.repformer.g1_dim:
            return None
        return Layer(self.repinit_out_dim, self.repformer.g1_dim, "none", False, False, False,
                     self.precision)

    @property
    def tebd_transform(self) -> Layer | None:
        if not self.add_tebd_to_repinit_out:
            return None
        return Layer(self.tebd_dim, self.repformer.g1_dim, "none", False, False, False,
                     self.precision)

    def stat_blocks(self) -> list[tuple[str, Any]]:
        """(parameter key, block) of every block with its own davg/dstd; a block has
        ``env_mat``, ``ntypes``, ``nnei``, ``rcut`` and ``set_davg_zero``."""
        out: list[tuple[str, Any]] = [("repinit", self.repinit_block)]
        if self.three_body_block is not None:
            out.append(("three_body", self.three_body_block))
        out.append(("repformer", self.repformer_block))
        return out

    def init(self, rng: np.random.Generator) -> Params:
        ri = self.repinit_block.init(rng)
        p: Params = {
            "type_embedding": self.type_embedding.init(rng),
            "repinit": {k: v for k, v in ri.items()
                        if k in ("embedding", "embedding_strip", "davg", "dstd")},
            "repformer": self.repformer_block.init(rng),
        }
        if self.three_body_block is not None:
            p["three_body"] = self.three_body_block.init(rng)
        for name in ("g1_shape_tranform", "tebd_transform"):
            layer = getattr(self, name)
            if layer is not None:
                p[name] = layer.init(rng)
        return p

    # ---- forward -------------------------------------------------------------------------------
    def __call__(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any,
                 mapping: Any = None) -> Any:
        """Descriptor (nf, nloc, dim_out). coord_ext (nf, nall, 3) Å, atype_ext (nf, nall),
        nlist (nf, nloc, nsel) sorted by distance, mapping (nf, nall) owner of each atom (may be
        omitted only when there are no ghost atoms)."""
        xp = namespace(coord_ext)
        nf, nloc, _ = nlist.shape
        if mapping is None:
            if coord_ext.shape[1] != nloc:
                raise ModelFormatError("dpa2 needs 'mapping' when there are ghost atoms")
            mapping = xp.broadcast_to(xp.arange(nloc, dtype=nlist.dtype)[None, :], (nf, nloc))
        table = self.type_embedding(p["type_embedding"], xp)
        # the repinit stage is atom-local: a backend may run it chunk by chunk of centre atoms
        # (not a compressed one: its table kernel is chunked already)
        chunks = None if self.repinit_compress is not None else find_kernel("centre_chunks", xp)

        def stage(coord: Any, atype: Any, nl: Any) -> Any:
            return self._repinit_stage(p, table, coord, atype, nl)

        if chunks is None:
            g1 = stage(coord_ext, atype_ext, nlist)
        else:
            g1 = chunks(stage, coord_ext, atype_ext, nlist, self.ntypes)
        rf = self.repformer
        nl = sub_nlist(xp, coord_ext, nlist, rf.rcut, rf.nsel)
        g1 = self.repformer_block(p["repformer"], coord_ext, atype_ext, nl, g1, mapping)
        if self.concat_output_tebd:
            g1 = xp.concat([g1, self._tebd(table, atype_ext[:, :nloc])], axis=-1)
        return g1

    def _tebd(self, table: Any, atype: Any) -> Any:
        """Type embedding (nf, nloc, tebd_dim) of the local atoms' types atype (nf, nloc)."""
        xp = namespace(table)
        nf, nloc = atype.shape
        return xp.reshape(xp.take(table, xp.reshape(atype, (-1,)), axis=0),
                          (nf, nloc, self.tebd_dim))

    def _repinit_stage(self, p: Params, table: Any, coord_ext: Any, atype_ext: Any,
                       nlist: Any) -> Any:
        """g1 (nf, nloc, g1_dim) entering the repformer: repinit (+ three-body) output, shape
        transform and type-embedding term; depends only on each atom's own neighbours."""
        xp = namespace(coord_ext)
        nloc = nlist.shape[1]
        ri = self.repinit
        nl = sub_nlist(xp, coord_ext, nlist, ri.rcut, ri.nsel)
        g1 = self.repinit_block.block(p["repinit"], coord_ext, atype_ext, nl, table)
        tb = self.three_body_block
        if tb is not None:
            nl3 = sub_nlist(xp, coord_ext, nlist, ri.three_body_rcut, ri.three_body_sel)
            g1 = xp.concat([g1, tb(p["three_body"], coord_ext, atype_ext, nl3, table)], axis=-1)
        if self.g1_shape_tranform is not None:
            g1 = self.g1_shape_tranform(p["g1_shape_tranform"], g1)
        if self.tebd_transform is not None:
            g1 = g1 + self.tebd_transform(p["tebd_transform"],
                                          self._tebd(table, atype_ext[:, :nloc]))
        return g1

    # ---- files -------------------------------------------------------------------------------
    def serialize(self, p: Params) -> dict:
        ri_block = self.repinit_block
        emb = NetworkCollection(0, self.ntypes, "embedding_network", (ri_block.embedding,))
        repinit_variable: dict[str, Any] = {
            "embeddings": emb.serialize({"networks": [p["repinit"]["embedding"]]}),
            "env_mat": ri_block.env_mat.serialize(),
            "@variables": {"davg": to_numpy(p["repinit"]["davg"]),
                           "dstd": to_numpy(p["repinit"]["dstd"])},
        }
        if self.repinit.tebd_input_mode == "strip":
            strip = NetworkCollection(0, self.ntypes, "embedding_network",
                                      (ri_block.embedding_strip,))
            repinit_variable["embeddings_strip"] = strip.serialize(
                {"networks": [p["repinit"]["embedding_strip"]]})
        identity = {"@class": "Identity", "@version": 1}
        shape = self.g1_shape_tranform
        data: dict[str, Any] = {
            "@class": "Descriptor", "type": "dpa2", "@version": 3,
            "ntypes": self.ntypes,
            "repinit_args": self.repinit.serialize(),
            "repformer_args": self.repformer.serialize(),
            "concat_output_tebd": self.concat_output_tebd,
            "precision": canonical(self.precision), "smooth": self.smooth,
            "exclude_types": [list(x) for x in self.exclude_types],
            "env_protection": self.env_protection, "trainable": self.trainable,
            "add_tebd_to_repinit_out": self.add_tebd_to_repinit_out,
            "use_econf_tebd": False, "use_tebd_bias": self.use_tebd_bias,
            "type_map": None if self.type_map is None else list(self.type_map),
            "type_embedding": self.type_embedding.serialize(p["type_embedding"]),
            "g1_shape_tranform": identity if shape is None
            else shape.serialize(p["g1_shape_tranform"]),
            "repinit_variable": repinit_variable,
            "repformers_variable": self.repformer_block.serialize(p["repformer"]),
        }
        if self.tebd_transform is not None:
            data["tebd_transform"] = self.tebd_transform.serialize(p["tebd_transform"])
        if self.repinit_compress is not None:  # polypot-only key, see polypot.model.compress
            data["compress"] = self.repinit_compress.serialize(p["repinit"]["compress"])
        tb = self.three_body_block
        if tb is not None:
            emb3 = NetworkCollection(0, self.ntypes, "embedding_network", (tb.embedding,))
            var3: dict[str, Any] = {
                "embeddings": emb3.serialize({"networks": [p["three_body"]["embedding"]]}),
                "env_mat": tb.env_mat.serialize(),
                "@variables": {"davg": to_numpy(p["three_body"]["davg"]),
                               "dstd": to_numpy(p["three_body"]["dstd"])},
            }
            if tb.tebd_input_mode == "strip":
                strip3 = NetworkCollection(0, self.ntypes, "embedding_network",
                                           (tb.embedding_strip,))
                var3["embeddings_strip"] = strip3.serialize(
                    {"networks": [p["three_body"]["embedding_strip"]]})
            data["repinit_three_body_variable"] = var3
        return data

    @classmethod
    def deserialize(cls, data: dict) -> tuple[DescrptDPA2, Params]:
        check_class(data, "Descriptor")
        if data.get("@version") == 4 or data.get("repinit_variable", {}).get("compress"):
            raise ModelFormatError(
                "dpa2: this file holds DeePMD-kit's compressed tables (descriptor @version 4); "
                "load the uncompressed model instead")
        version = check_version(data, "dpa2 descriptor", 3, 1)
        if data.get("use_econf_tebd", False):
            raise ModelFormatError("dpa2: use_econf_tebd is not supported yet")
        rf_args = dict(data["repformer_args"])
        if version < 3:
            rf_args.update(use_sqrt_nnei=False, g1_out_conv=False, g1_out_mlp=False)
        tebd, tp = TypeEmbedNet.deserialize(data["type_embedding"])
        precision = canonical(data.get("precision", "float64"))
        dt = to_dtype(precision)
        tm = data.get("type_map")
        obj = cls(
            ntypes=int(data["ntypes"]),
            repinit=RepinitArgs.from_dict(data["repinit_args"]),
            repformer=RepformerArgs.from_dict(rf_args),
            concat_output_tebd=bool(data.get("concat_output_tebd", True)),
            precision=precision, smooth=bool(data.get("smooth", True)),
            exclude_types=tuple(tuple(int(t) for t in x) for x in data.get("exclude_types", [])),
            env_protection=float(data.get("env_protection", 0.0)),
            trainable=bool(data.get("trainable", True)),
            add_tebd_to_repinit_out=bool(data.get("add_tebd_to_repinit_out", False)),
            use_tebd_bias=bool(data.get("use_tebd_bias", True)),
            type_map=None if tm is None else tuple(tm), type_embedding=tebd)
        shape = (obj.ntypes, obj.nnei, 4)
        riv = data["repinit_variable"]
        _, ep = NetworkCollection.deserialize(riv["embeddings"])
        repinit: Params = {"embedding": ep["networks"][0],
                           **_stats(riv, "repinit", shape, dt)}
        if obj.repinit.tebd_input_mode == "strip":
            _, sp = NetworkCollection.deserialize(riv["embeddings_strip"])
            repinit["embedding_strip"] = sp["networks"][0]
        params: Params = {
            "type_embedding": tp, "repinit": repinit,
            "repformer": obj.repformer_block.deserialize_params(data["repformers_variable"]),
        }
        tb = obj.three_body_block
        if tb is not None:
            v3 = data["repinit_three_body_variable"]
            _, e3 = NetworkCollection.deserialize(v3["embeddings"])
            params["three_body"] = {"embedding": e3["networks"][0],
                                    **_stats(v3, "three_body", (obj.ntypes, tb.nnei, 4), dt)}
            if tb.tebd_input_mode == "strip":
                _, s3 = NetworkCollection.deserialize(v3["embeddings_strip"])
                params["three_body"]["embedding_strip"] = s3["networks"][0]
        if data.get("compress"):
            tab, params["repinit"]["compress"] = Tabulation.deserialize(data["compress"], dt)
            strip = obj.repinit.tebd_input_mode == "strip"
            ntab = 1 if strip else obj.ntypes ** (1 if obj.repinit.type_one_side else 2)
            if (tab.ntab, tab.width) != (ntab, obj.repinit.neuron[-1]) or \
                    strip != ("type_table" in params["repinit"]["compress"]):
                raise ModelFormatError(
                    f"dpa2: compress table ({tab.ntab} tables of width {tab.width}) does not "
                    f"fit the repinit block ({obj.repinit.tebd_input_mode} mode)")
            obj = dataclasses.replace(obj, repinit_compress=tab)
        for name in ("g1_shape_tranform", "tebd_transform"):
            spec = getattr(obj, name)
            if spec is None:
                continue
            if name not in data:
                raise ModelFormatError(f"dpa2: missing {name!r}")
            _, lp = Layer.deserialize(data[name])
            if lp["w"].shape != (spec.in_dim, spec.out_dim):
                raise ModelFormatError(f"dpa2: {name} has shape {lp['w'].shape}, expected "
                                       f"{(spec.in_dim, spec.out_dim)}")
            params[name] = lp
        return obj, params
