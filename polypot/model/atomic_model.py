"""The DP atomic model: descriptor + fitting -> atomic energy, plus the per-type output bias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..kernels import find_kernel
from .array_api import namespace, to_numpy
from .env_mat import pair_exclude_mask
from .errors import ModelFormatError, check_class, check_version
from .network import Params
from .precision import to_dtype
from .registry import descriptor_class, fitting_class


@dataclass(frozen=True)
class DPAtomicModel:
    """E_i = fitting(descriptor)_i + out_bias[t_i]; zero for excluded or padding atoms."""

    type_map: tuple[str, ...]
    descriptor: Any
    fitting: Any
    atom_exclude_types: tuple[int, ...] = ()
    pair_exclude_types: tuple[tuple[int, int], ...] = ()
    rcond: float | None = None
    preset_out_bias: Any = None

    @property
    def ntypes(self) -> int:
        return len(self.type_map)

    @property
    def rcut(self) -> float:
        return self.descriptor.rcut

    @property
    def sel(self) -> list[int] | int:
        return self.descriptor.sel if self.descriptor.mixed_types else list(self.descriptor.sel)

    @property
    def mixed_types(self) -> bool:
        return self.descriptor.mixed_types

    @property
    def precision(self) -> str:
        return self.descriptor.precision

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.fitting.precision)
        return {
            "descriptor": self.descriptor.init(rng),
            "fitting": self.fitting.init(rng),
            "out_bias": np.zeros((1, self.ntypes, 1), dtype=dt),
            "out_std": np.ones((1, self.ntypes, 1), dtype=dt),
        }

    def __call__(self, p: Params, coord_ext: Any, atype_ext: Any, nlist: Any,
                 mapping: Any = None) -> Any:
        """Atomic energy (nf, nloc, 1), eV. coord_ext (nf, nall, 3) Å; atype_ext -1 = padding;
        mapping (nf, nall) owner of each extended atom (message-passing descriptors need it)."""
        xp = namespace(coord_ext)
        nloc = nlist.shape[1]
        real_ext = atype_ext >= 0
        atype_ext = xp.where(real_ext, atype_ext, xp.zeros_like(atype_ext))
        coord_ext = xp.astype(coord_ext, p["out_bias"].dtype)
        if self.pair_exclude_types:
            keep = pair_exclude_mask(xp, self.ntypes, self.pair_exclude_types, atype_ext, nlist)
            nlist = xp.where(keep, nlist, xp.full_like(nlist, -1))
        atype = atype_ext[:, :nloc]

        # atom-local descriptors may be evaluated chunk by chunk of centre atoms by a backend
        # kernel (polypot.kernels); message passing (DPA-2) needs the whole system at once, and
        # compressed descriptors are chunked already by their table kernel (chunking them twice
        # doubled the time per step)
        whole = (getattr(self.descriptor, "message_passing", False)
                 or getattr(self.descriptor, "compress", None) is not None)
        chunks = None if whole else find_kernel("centre_chunks", xp)

        # a program whose centres come sorted by type (the backend vouches; the whole system
        # only): per-type fitting nets on their own rows
        counts = find_kernel("sorted_type_counts", xp)
        counts = None if counts is None or chunks is not None else counts()

        def energies(coord: Any, types: Any, nl: Any) -> Any:
            d = self.descriptor(p["descriptor"], coord, types, nl,
                                mapping if chunks is None else None)
            if counts is not None:
                return self.fitting(p["fitting"], d, types[:, :nl.shape[1]], counts)
            return self.fitting(p["fitting"], d, types[:, :nl.shape[1]])

        if chunks is None:
            e = energies(coord_ext, atype_ext, nlist)
        else:
            e = chunks(energies, coord_ext, atype_ext, nlist, self.ntypes, energy=True,
                       max_nnei=int(np.sum(self.sel)),
                       attention=hasattr(self.descriptor, "attn_layer"))
        nf = atype.shape[0]
        bias = xp.reshape(xp.take(p["out_bias"][0, ...], xp.reshape(atype, (-1,)), axis=0),
                          (nf, nloc, 1))
        e = e + bias
        keep_atom = real_ext[:, :nloc]
        for t in self.atom_exclude_types:
            keep_atom = keep_atom & (atype != t)
        return e * xp.astype(keep_atom, e.dtype)[..., None]

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "Model",
            "type": "standard",
            "@version": 2,
            "type_map": list(self.type_map),
            "descriptor": self.descriptor.serialize(p["descriptor"]),
            "fitting": self.fitting.serialize(p["fitting"]),
            "atom_exclude_types": list(self.atom_exclude_types),
            "pair_exclude_types": [list(x) for x in self.pair_exclude_types],
            "rcond": self.rcond,
            "preset_out_bias": self.preset_out_bias,
            "@variables": {"out_bias": to_numpy(p["out_bias"]), "out_std": to_numpy(p["out_std"])},
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[DPAtomicModel, Params]:
        check_class(data, "Model")
        check_version(data, "Model", 2, 1)
        mtype = data.get("type", "standard")
        if mtype != "standard":
            raise ModelFormatError(
                f"model type {mtype!r} is not supported yet (supported: 'standard')"
            )
        for key in ("type_map", "descriptor", "fitting"):
            if key not in data:
                raise ModelFormatError(f"model dictionary has no {key!r}")
        dd, fd = data["descriptor"], data["fitting"]
        if not isinstance(dd, dict) or not isinstance(fd, dict):
            raise ModelFormatError("model 'descriptor' and 'fitting' must be dictionaries")
        desc, dp = descriptor_class(str(dd.get("type")).lower()).deserialize(dd)
        fit, fp = fitting_class(str(fd.get("type", "ener")).lower()).deserialize(fd)
        if fit.dim_descrpt != desc.dim_out:
            raise ModelFormatError(
                f"fitting dim_descrpt {fit.dim_descrpt} != descriptor output {desc.dim_out}"
            )
        obj = cls(
            type_map=tuple(data["type_map"]),
            descriptor=desc,
            fitting=fit,
            atom_exclude_types=tuple(int(t) for t in data.get("atom_exclude_types", []) or []),
            pair_exclude_types=tuple(
                tuple(int(t) for t in x) for x in data.get("pair_exclude_types", []) or []
            ),
            rcond=data.get("rcond"),
            preset_out_bias=data.get("preset_out_bias"),
        )
        dt = to_dtype(fit.precision)
        var = data.get("@variables", {})
        shape = (1, obj.ntypes, 1)
        out_bias = np.zeros(shape, dt) if var.get("out_bias") is None else np.asarray(
            var["out_bias"]).astype(dt)
        out_std = np.ones(shape, dt) if var.get("out_std") is None else np.asarray(
            var["out_std"]).astype(dt)
        if out_bias.shape != shape:
            raise ModelFormatError(f"model 'out_bias' has shape {out_bias.shape}, expected {shape}")
        return obj, {"descriptor": dp, "fitting": fp, "out_bias": out_bias, "out_std": out_std}
