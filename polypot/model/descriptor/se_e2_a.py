"""DeepPot-SE descriptor ``se_e2_a`` (Zhang et al., NeurIPS 2018).

For centre i with normalised environment rows R (nnei, 4) and embeddings G = N(R[:, :1])
(nnei, M): T = G^T R / nnei (M, 4) and D = T T[:M2]^T, flattened to M * M2.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..array_api import namespace, to_numpy
from ..compress import Tabulation
from ..env_mat import EnvMat, pair_exclude_mask
from ..errors import ModelFormatError, check_class, check_version
from ..network import EmbeddingNet, NetworkCollection, Params
from ..precision import canonical, to_dtype
from ..registry import register_descriptor


def _starts(widths: tuple[Any, ...]) -> list[Any]:
    """Column where each type section starts, and the total: [0, w0, w0 + w1, ...] (Python
    ints, or symbolic dimensions under ``jax.export``)."""
    out = [0]
    for w in widths:
        out.append(out[-1] + w)
    return out


@register_descriptor("se_e2_a", "se_a")
@dataclass(frozen=True)
class DescrptSeA:
    """Type-sectioned smooth-edition descriptor. Output (nf, nloc, neuron[-1] * axis_neuron)."""

    rcut: float
    rcut_smth: float
    sel: tuple[int, ...]
    neuron: tuple[int, ...] = (24, 48, 96)
    axis_neuron: int = 8
    resnet_dt: bool = False
    type_one_side: bool = True
    exclude_types: tuple[tuple[int, int], ...] = ()
    env_protection: float = 0.0
    set_davg_zero: bool = False
    activation_function: str = "tanh"
    precision: str = "float64"
    type_map: tuple[str, ...] | None = None
    trainable: bool = True
    embeddings: NetworkCollection | None = None
    compress: Tabulation | None = None  # tabulated embedding (polypot compress), or None
    #: widths of the neighbour list's type sections when narrower than ``sel`` (see
    #: :meth:`narrowed`); None: the list has ``sel`` columns per type
    list_sel: tuple[Any, ...] | None = None

    mixed_types = False

    def __post_init__(self) -> None:
        if self.embeddings is None:
            ndim = 1 if self.type_one_side else 2
            nets = tuple(
                EmbeddingNet(1, self.neuron, self.activation_function, self.resnet_dt, True,
                             self.precision)
                for _ in range(self.ntypes**ndim)
            )
            object.__setattr__(self, "embeddings", NetworkCollection(
                ndim, self.ntypes, "embedding_network", nets))

    @property
    def ntypes(self) -> int:
        return len(self.sel)

    @property
    def nnei(self) -> int:
        return sum(self.sel)

    @property
    def dim_out(self) -> int:
        return self.neuron[-1] * self.axis_neuron

    @property
    def env_mat(self) -> EnvMat:
        return EnvMat(self.rcut, self.rcut_smth, self.env_protection)

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.precision)
        shape = (self.ntypes, self.nnei, 4)
        return {
            "embeddings": self.embeddings.init(rng),
            "davg": np.zeros(shape, dtype=dt),
            "dstd": np.ones(shape, dtype=dt),
        }

    narrowable = True  # :meth:`narrowed` exists

    def narrowed(self, widths: tuple[Any, ...]) -> DescrptSeA:
        """This descriptor reading neighbour lists of ``widths[t] <= sel[t]`` columns for type
        t: the first ``widths[t]`` columns of each ``sel`` section (a list whose real neighbours
        all lie there). The result is the same as with the full list: every slot left out is
        empty for every atom, and an empty slot contributes a constant per centre type (its row
        is -davg/dstd, not zero, as in DeePMD-kit), added by :meth:`_missing_slots`. Widths may
        be symbolic (``jax.export``)."""
        if len(widths) != self.ntypes:
            raise ValueError(f"se_e2_a: {len(widths)} section widths for {self.ntypes} types")
        return dataclasses.replace(self, list_sel=tuple(widths))

    def _list_slots(self, x: Any) -> Any:
        """The per-slot array x (ntypes, nnei, ...) cut to the columns of the neighbour list."""
        xp = namespace(x)
        if self.list_sel is None:
            return x
        starts = _starts(self.sel)
        return xp.concat([x[:, starts[t]:starts[t] + w] for t, w in enumerate(self.list_sel)],
                         axis=1)

    def __call__(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any,
                 mapping: Any = None) -> Any:
        """Descriptor (nf, nloc, M * M2) from extended coords (nf, nall, 3), types, nlist."""
        xp = namespace(coord_ext)
        nf, nloc, nnei = nlist.shape
        atype = atype_ext[:, :nloc]
        rr, _, _ = self.env_mat(coord_ext, atype, nlist, self._list_slots(p["davg"]),
                                self._list_slots(p["dstd"]))
        keep = pair_exclude_mask(xp, self.ntypes, self.exclude_types, atype_ext, nlist)
        rr = rr * xp.astype(keep, rr.dtype)[..., None]
        sections = self.list_sel or self.sel
        if self.compress is None:
            gr = self._sum_nets(p, rr, atype, sections)
        else:
            gr = self._sum_table(p, rr, atype, sections)
        if self.list_sel is not None:
            gr = gr + self._missing_slots(p, atype)
        ng = self.neuron[-1]
        gr = gr / self.nnei
        gr1 = gr[:, :, : self.axis_neuron, :]
        d = xp.matmul(gr, xp.permute_dims(gr1, (0, 1, 3, 2)))
        return xp.reshape(d, (nf, nloc, ng * self.axis_neuron))

    def _sum_table(self, p: Params, rr: Any, atype: Any, sections: tuple[Any, ...]) -> Any:
        """Compressed sum over neighbours of G^T R (nf, nloc, ng, 4), G from the tables.

        rr: (nf, nloc, nnei, 4) normalised rows, type sections of ``sections`` columns;
        atype: (nf, nloc) centre types."""
        xp = namespace(rr)
        if all(isinstance(w, (int, np.integer)) for w in sections):
            tj = xp.asarray(np.repeat(np.arange(self.ntypes), sections), dtype=atype.dtype)
        else:  # symbolic widths (jax.export)
            tj = xp.concat([xp.full((w,), t, dtype=atype.dtype) for t, w in enumerate(sections)])
        # table index as NetworkCollection.index: t_j (one side) or t_i + t_j * ntypes
        index = tj[None, None, :] * (self.ntypes if self.embeddings.ndim == 2 else 1)
        if self.embeddings.ndim == 2:
            index = index + atype[:, :, None]
        index = xp.broadcast_to(index, tuple(rr.shape[:3]))
        return self.compress.contract(p["compress"]["table"], rr[..., 0], rr, index)

    def _missing_slots(self, p: Params, atype: Any) -> Any:
        """sum of G^T R (nf, nloc, ng, 4) over the slots of ``sel`` that a narrowed list leaves
        out: empty for every atom, each is the row -davg/dstd of its centre type and slot."""
        xp = namespace(p["davg"])
        starts = _starts(self.sel)
        ng = self.neuron[-1]
        rows = -p["davg"] / p["dstd"]  # (ntypes, nnei, 4): the rows of empty slots
        per_type = []
        for ti in range(self.ntypes):
            total = xp.zeros((ng, 4), dtype=rows.dtype)
            for tj, width in enumerate(self.list_sel):
                key = (tj,) if self.embeddings.ndim == 1 else (ti, tj)
                net = self.embeddings.net(key)
                if net is None:
                    continue
                r = rows[ti, starts[tj]:starts[tj + 1]]  # (sel[tj], 4)
                left_out = xp.astype(xp.arange(self.sel[tj]) >= width, r.dtype)[:, None]
                if self.compress is not None:  # G from the table, as for the other slots
                    index = xp.full((1, self.sel[tj]), self.embeddings.index(key, self.ntypes))
                    total = total + self.compress.contract(p["compress"]["table"],
                                                           r[None, :, 0], (r * left_out)[None],
                                                           index)[0]
                    continue
                g = net(self.embeddings.params(p["embeddings"], key), r[:, 0:1])
                total = total + xp.matmul(xp.permute_dims(g, (1, 0)), r * left_out)
            per_type.append(total)
        table = xp.stack(per_type)  # (ntypes, ng, 4)
        nf, nloc = atype.shape
        return xp.reshape(xp.take(table, xp.reshape(atype, (-1,)), axis=0), (nf, nloc, ng, 4))

    def _sum_nets(self, p: Params, rr: Any, atype: Any, sections: tuple[Any, ...]) -> Any:
        """Sum over neighbours of G^T R (nf, nloc, ng, 4), G from the embedding nets; the list's
        type sections have ``sections`` columns."""
        xp = namespace(rr)
        nf, nloc = rr.shape[:2]
        starts = _starts(sections)
        ng = self.neuron[-1]
        gr = xp.zeros((nf, nloc, ng, 4), dtype=rr.dtype)
        keys = list(itertools.product(range(self.ntypes), repeat=self.embeddings.ndim))
        by_centre = not self.type_one_side and all(self.embeddings.net(k) is not None
                                                   for k in keys)
        if by_centre:  # one pass per neighbour type, each atom through its own centre's net
            for tj in range(self.ntypes):
                tr = rr[:, :, starts[tj]:starts[tj + 1], :]
                nets = [(ti, tj) for ti in range(self.ntypes)]
                gg = self.embeddings.net(nets[0]).call_selected(
                    [self.embeddings.params(p["embeddings"], k) for k in nets], tr[..., 0:1],
                    atype)
                # (nf, nloc, ng, 4) = sum over neighbours of G^T R
                gr = gr + xp.matmul(xp.permute_dims(gg, (0, 1, 3, 2)), tr)
        for key in [] if by_centre else keys:
            tj = key[-1]
            net = self.embeddings.net(key)
            if net is None:
                continue
            tr = rr[:, :, starts[tj]:starts[tj + 1], :]
            gg = net(self.embeddings.params(p["embeddings"], key), tr[..., 0:1])
            contrib = xp.matmul(xp.permute_dims(gg, (0, 1, 3, 2)), tr)
            if not self.type_one_side:
                centre = xp.astype(atype == key[0], rr.dtype)[..., None, None]
                contrib = contrib * centre
            gr = gr + contrib
        return gr

    def serialize(self, p: Params) -> dict:
        data = {
            "@class": "Descriptor",
            "type": "se_e2_a",
            "@version": 2,
            "rcut": self.rcut,
            "rcut_smth": self.rcut_smth,
            "sel": list(self.sel),
            "neuron": list(self.neuron),
            "axis_neuron": self.axis_neuron,
            "resnet_dt": self.resnet_dt,
            "set_davg_zero": self.set_davg_zero,
            "activation_function": self.activation_function,
            "precision": canonical(self.precision),
            "embeddings": self.embeddings.serialize(p["embeddings"]),
            "env_mat": self.env_mat.serialize(),
            "exclude_types": [list(x) for x in self.exclude_types],
            "env_protection": self.env_protection,
            "@variables": {"davg": to_numpy(p["davg"]), "dstd": to_numpy(p["dstd"])},
            "type_map": None if self.type_map is None else list(self.type_map),
            "trainable": self.trainable,
            "type_one_side": self.type_one_side,
            "spin": None,
        }
        if self.compress is not None:  # polypot-only key, see polypot.model.compress
            data["compress"] = self.compress.serialize(p["compress"])
        return data

    @classmethod
    def deserialize(cls, data: dict) -> tuple[DescrptSeA, Params]:
        check_class(data, "Descriptor")
        check_version(data, "se_e2_a descriptor", 2, 1)
        if data.get("spin") is not None:
            raise ModelFormatError("se_e2_a: spin models are not supported")
        if data.get("env_mat", {}).get("use_exp_switch", False):
            raise ModelFormatError("se_e2_a: use_exp_switch is not supported")
        emb, ep = NetworkCollection.deserialize(data["embeddings"])
        precision = canonical(data.get("precision", "float64"))
        dt = to_dtype(precision)
        tm = data.get("type_map")
        obj = cls(
            rcut=float(data["rcut"]),
            rcut_smth=float(data["rcut_smth"]),
            sel=tuple(int(s) for s in data["sel"]),
            neuron=tuple(int(n) for n in data["neuron"]),
            axis_neuron=int(data["axis_neuron"]),
            resnet_dt=bool(data.get("resnet_dt", False)),
            type_one_side=bool(data.get("type_one_side", emb.ndim == 1)),
            exclude_types=tuple(tuple(int(t) for t in x) for x in data.get("exclude_types", [])),
            env_protection=float(data.get("env_protection", 0.0)),
            set_davg_zero=bool(data.get("set_davg_zero", False)),
            activation_function=data.get("activation_function", "tanh"),
            precision=precision,
            type_map=None if tm is None else tuple(tm),
            trainable=bool(data.get("trainable", True)),
            embeddings=emb,
        )
        var = data["@variables"]
        params = {
            "embeddings": ep,
            "davg": np.asarray(var["davg"]).astype(dt),
            "dstd": np.asarray(var["dstd"]).astype(dt),
        }
        if data.get("compress"):
            spec, params["compress"] = Tabulation.deserialize(data["compress"], dt)
            if spec.ntab != len(emb.networks) or spec.width != obj.neuron[-1]:
                raise ModelFormatError(
                    f"se_e2_a: compress table has {spec.ntab} tables of width {spec.width}, "
                    f"expected {len(emb.networks)} of width {obj.neuron[-1]}"
                )
            obj = dataclasses.replace(obj, compress=spec)
        want = (obj.ntypes, obj.nnei, 4)
        for k in ("davg", "dstd"):
            if params[k].shape != want:
                raise ModelFormatError(
                    f"se_e2_a: '{k}' has shape {params[k].shape}, expected {want}"
                )
        return obj, params
