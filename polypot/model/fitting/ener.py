"""Energy fitting ``ener``: E_i = F_{t_i}(D_i) + bias_atom_e[t_i]; one shared F if mixed_types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...kernels import find_kernel
from ..array_api import namespace, to_numpy
from ..errors import ModelFormatError, check_class, check_version
from ..network import FittingNet, NetworkCollection, Params
from ..precision import canonical, to_dtype
from ..registry import register_fitting


@register_fitting("ener")
@dataclass(frozen=True)
class EnergyFitting:
    """Atomic energy (nf, nloc, 1) in eV from descriptors (nf, nloc, dim_descrpt)."""

    ntypes: int
    dim_descrpt: int
    neuron: tuple[int, ...] = (120, 120, 120)
    resnet_dt: bool = True
    activation_function: str = "tanh"
    precision: str = "float64"
    mixed_types: bool = False
    exclude_types: tuple[int, ...] = ()
    rcond: float | None = None
    type_map: tuple[str, ...] | None = None
    trainable: bool | list[bool] = True
    atom_ener: tuple[Any, ...] = ()
    nets: NetworkCollection | None = field(default=None, compare=False)

    dim_out = 1

    def __post_init__(self) -> None:
        if self.nets is None:
            n = 1 if self.mixed_types else self.ntypes
            net = FittingNet(self.dim_descrpt, 1, self.neuron, self.activation_function,
                             self.resnet_dt, self.precision, True)
            object.__setattr__(self, "nets", NetworkCollection(
                0 if self.mixed_types else 1, self.ntypes, "fitting_network", (net,) * n))

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.precision)
        return {"nets": self.nets.init(rng), "bias_atom_e": np.zeros((self.ntypes, 1), dtype=dt)}

    def __call__(self, p: Params, descriptor: Any, atype: Any,
                 sorted_counts: tuple[Any, ...] | None = None) -> Any:
        """descriptor (nf, nloc, dim_descrpt), atype (nf, nloc) -> energy (nf, nloc, 1).
        ``sorted_counts``: the atoms come sorted by type, ``sorted_counts[t]`` of type t (may
        be symbolic): each type's net runs on its own rows only."""
        xp = namespace(descriptor)
        bias = p["bias_atom_e"]
        if sorted_counts is not None and not self.mixed_types:
            parts, start = [], 0
            for t, n in enumerate(sorted_counts):
                rows = descriptor[:, start:start + n]
                parts.append(self.nets.net((t,))(self.nets.params(p["nets"], (t,)), rows)
                             + bias[t, :])
                start = start + n
            out = xp.concat(parts, axis=1)
        elif self.mixed_types:
            out = self.nets.net(())(self.nets.params(p["nets"], ()), descriptor)
            nf, nloc = atype.shape
            out = out + xp.reshape(xp.take(bias, xp.reshape(atype, (-1,)), axis=0), (nf, nloc, 1))
        elif (q := self._uniform_params(p, atype)) is not None:
            # every atom has the same type (vouched for by the backend): one net
            out = self.nets.net((0,))(q["net"], descriptor) + q["bias"]
        else:
            out = xp.zeros((*atype.shape, 1), dtype=descriptor.dtype)
            for t in range(self.ntypes):
                yt = self.nets.net((t,))(self.nets.params(p["nets"], (t,)), descriptor)
                yt = yt + bias[t, :]
                out = out + yt * xp.astype(atype == t, descriptor.dtype)[..., None]
        if self.exclude_types:
            keep = xp.ones(atype.shape, dtype=xp.bool)
            for t in self.exclude_types:
                keep = keep & (atype != t)
            out = out * xp.astype(keep, out.dtype)[..., None]
        return out

    def _uniform_params(self, p: Params, atype: Any) -> Params | None:
        """{"net", "bias"} of the one type of every atom of ``atype``, where a backend kernel
        (``uniform_type_params``, polypot.kernels) vouches that they share it; else None."""
        uniform = find_kernel("uniform_type_params", namespace(atype))
        nets = [self.nets.net((t,)) for t in range(self.ntypes)]
        if uniform is None or any(n is None or n != nets[0] for n in nets):
            return None
        return uniform([{"net": self.nets.params(p["nets"], (t,)), "bias": p["bias_atom_e"][t, :]}
                        for t in range(self.ntypes)], atype)

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "Fitting",
            "@version": 4,
            "type": "ener",
            "var_name": "energy",
            "ntypes": self.ntypes,
            "dim_descrpt": self.dim_descrpt,
            "neuron": list(self.neuron),
            "resnet_dt": self.resnet_dt,
            "numb_fparam": 0,
            "numb_aparam": 0,
            "dim_case_embd": 0,
            "default_fparam": None,
            "activation_function": self.activation_function,
            "precision": canonical(self.precision),
            "mixed_types": self.mixed_types,
            "nets": self.nets.serialize(p["nets"]),
            "rcond": self.rcond,
            "exclude_types": list(self.exclude_types),
            "@variables": {
                "bias_atom_e": to_numpy(p["bias_atom_e"]),
                "case_embd": None,
                "fparam_avg": None,
                "fparam_inv_std": None,
                "aparam_avg": None,
                "aparam_inv_std": None,
            },
            "type_map": None if self.type_map is None else list(self.type_map),
            "tot_ener_zero": False,
            "trainable": (list(self.trainable) if isinstance(self.trainable, (list, tuple))
                          else [bool(self.trainable)] * (len(self.neuron) + 1)),
            "layer_name": None,
            "use_aparam_as_mask": False,
            "spin": None,
            "dim_out": 1,
            "atom_ener": list(self.atom_ener),
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[EnergyFitting, Params]:
        check_class(data, "Fitting")
        check_version(data, "ener fitting", 4, 1)
        for key in ("numb_fparam", "numb_aparam", "dim_case_embd"):
            if int(data.get(key, 0) or 0) != 0:
                raise ModelFormatError(f"ener fitting: {key} > 0 is not supported yet")
        if data.get("spin") is not None:
            raise ModelFormatError("ener fitting: spin models are not supported")
        nets, np_ = NetworkCollection.deserialize(data["nets"])
        precision = canonical(data.get("precision", "float64"))
        tm = data.get("type_map")
        obj = cls(
            ntypes=int(data["ntypes"]),
            dim_descrpt=int(data["dim_descrpt"]),
            neuron=tuple(int(n) for n in data["neuron"]),
            resnet_dt=bool(data.get("resnet_dt", True)),
            activation_function=data.get("activation_function", "tanh"),
            precision=precision,
            mixed_types=bool(data.get("mixed_types", nets.ndim == 0)),
            exclude_types=tuple(int(t) for t in data.get("exclude_types", [])),
            rcond=data.get("rcond"),
            type_map=None if tm is None else tuple(tm),
            trainable=data.get("trainable", True),
            atom_ener=tuple(data.get("atom_ener", []) or []),
            nets=nets,
        )
        bias = np.asarray(data["@variables"]["bias_atom_e"]).astype(to_dtype(precision))
        if bias.shape != (obj.ntypes, 1):
            raise ModelFormatError(
                f"ener fitting: 'bias_atom_e' has shape {bias.shape}, expected ({obj.ntypes}, 1)"
            )
        return obj, {"nets": np_, "bias_atom_e": bias}
