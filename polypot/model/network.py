"""Dense layers and the networks of DeePMD-kit, as pure functions of (params, inputs).

Semantics follow DeePMD-kit's ``NativeLayer``: ``y = act(x W + b)``; ``y *= idt`` with a timestep;
``y += x`` when the layer keeps the width and ``y += [x, x]`` when it doubles it (``resnet``).
Parameters are dicts ``{"w": (in, out), "b": (out,) | None, "idt": (out,) | None}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kernels import find_kernel
from .array_api import namespace, to_numpy
from .errors import ModelFormatError, check_class, check_version
from .precision import canonical, to_dtype

Params = dict[str, Any]

ACTIVATIONS = (
    "tanh", "relu", "relu6", "softplus", "sigmoid", "gelu", "gelu_tf", "silu", "none", "linear",
)


def activation(name: str | None, x: Any) -> Any:
    """Apply DeePMD-kit activation ``name`` to ``x``."""
    xp = namespace(x)
    key = (name or "none").lower()
    if key == "tanh":
        return xp.tanh(x)
    if key == "relu":
        return x * xp.astype(x > 0, x.dtype)
    if key == "relu6":
        return xp.clip(x, 0.0, 6.0)
    if key == "softplus":
        return xp.logaddexp(x, xp.zeros_like(x))
    if key == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-x))
    if key in ("gelu", "gelu_tf"):
        return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if key == "silu":
        return x / (1.0 + xp.exp(-x))
    if key in ("none", "linear"):
        return x
    raise ModelFormatError(f"unknown activation_function {name!r}; expected one of {ACTIVATIONS}")


def _check_activation(name: str | None) -> None:
    if (name or "none").lower() not in ACTIVATIONS:
        raise ModelFormatError(
            f"unknown activation_function {name!r}; expected one of {ACTIVATIONS}"
        )


@dataclass(frozen=True)
class Layer:
    """One dense layer. Input (..., in_dim) -> output (..., out_dim)."""

    in_dim: int
    out_dim: int
    activation_function: str | None = None
    bias: bool = True
    resnet: bool = False
    use_timestep: bool = False
    precision: str = "float64"
    trainable: bool = True

    def __post_init__(self) -> None:
        _check_activation(self.activation_function)

    def init(self, rng: np.random.Generator) -> Params:
        """Random parameters (DeePMD-kit's initial distributions)."""
        dt = to_dtype(self.precision)
        scale = 1.0 / math.sqrt(self.in_dim + self.out_dim)
        w = rng.normal(0.0, scale, (self.in_dim, self.out_dim))
        b = rng.normal(0.0, 1.0, (self.out_dim,)) if self.bias else None
        idt = rng.normal(0.1, 0.001, (self.out_dim,)) if self.use_timestep else None
        return {
            "w": w.astype(dt),
            "b": None if b is None else b.astype(dt),
            "idt": None if idt is None else idt.astype(dt),
        }

    def __call__(self, p: Params, x: Any) -> Any:
        xp = namespace(x, p["w"])
        y = xp.matmul(x, p["w"])
        if p.get("b") is not None:
            y = y + p["b"]
        y = activation(self.activation_function, y)
        if p.get("idt") is not None:
            y = y * p["idt"]
        if self.resnet:
            if self.out_dim == self.in_dim:
                y = y + x
            elif self.out_dim == 2 * self.in_dim:  # y + [x, x], without building [x, x]
                lead = tuple(y.shape[:-1])
                y = xp.reshape(xp.reshape(y, (*lead, 2, self.in_dim)) + x[..., None, :],
                               (*lead, self.out_dim))
        return y

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "Layer",
            "@version": 2,
            "bias": self.bias,
            "use_timestep": self.use_timestep,
            "activation_function": self.activation_function,
            "resnet": self.resnet,
            "precision": canonical(self.precision),
            "trainable": self.trainable,
            "@variables": {
                "w": to_numpy(p["w"]),
                "b": to_numpy(p.get("b")),
                "idt": to_numpy(p.get("idt")),
            },
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[Layer, Params]:
        check_class(data, "Layer")
        check_version(data, "Layer", 2, 1)
        var = data["@variables"]
        w = np.asarray(var["w"])
        if w.ndim != 2:
            raise ModelFormatError(f"Layer: 'w' must be 2-D (in, out), got shape {w.shape}")
        b = var.get("b")
        idt = var.get("idt")
        precision = data.get("precision", "float64")
        dt = to_dtype(precision)
        layer = cls(
            in_dim=w.shape[0],
            out_dim=w.shape[1],
            activation_function=data.get("activation_function"),
            bias=b is not None,
            resnet=bool(data.get("resnet", False)),
            use_timestep=idt is not None,
            precision=canonical(precision),
            trainable=bool(data.get("trainable", True)),
        )
        params = {
            "w": w.astype(dt),
            "b": None if b is None else np.asarray(b).astype(dt),
            "idt": None if idt is None else np.asarray(idt).astype(dt),
        }
        return layer, params


def _has_skip(in_dim: int, out_dim: int) -> bool:
    """A resnet layer adds its input when it keeps or doubles the width (DeePMD-kit keeps the
    timestep ``idt`` only for such layers)."""
    return out_dim in (in_dim, 2 * in_dim)


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalisation over the last axis, with optional affine weights."""

    dim: int
    eps: float = 1e-5
    trainable: bool = True
    precision: str = "float64"

    def init(self, rng: np.random.Generator) -> Params:
        dt = to_dtype(self.precision)
        return {"w": np.ones(self.dim, dtype=dt), "b": np.zeros(self.dim, dtype=dt)}

    def __call__(self, p: Params, x: Any) -> Any:
        xp = namespace(x)
        mean = xp.mean(x, axis=-1, keepdims=True)
        var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
        y = (x - mean) / xp.sqrt(var + self.eps)
        if p.get("w") is not None:
            y = y * p["w"]
        if p.get("b") is not None:
            y = y + p["b"]
        return y

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "LayerNorm",
            "@version": 1,
            "eps": self.eps,
            "trainable": self.trainable,
            "precision": canonical(self.precision),
            "@variables": {"w": to_numpy(p.get("w")), "b": to_numpy(p.get("b"))},
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[LayerNorm, Params]:
        check_class(data, "LayerNorm")
        check_version(data, "LayerNorm", 1)
        var = data["@variables"]
        precision = data.get("precision", "float64")
        dt = to_dtype(precision)
        w = None if var.get("w") is None else np.asarray(var["w"]).astype(dt)
        b = None if var.get("b") is None else np.asarray(var["b"]).astype(dt)
        dim = (w if w is not None else b).shape[0]
        ln = cls(dim=dim, eps=float(data.get("eps", 1e-5)),
                 trainable=bool(data.get("trainable", True)), precision=canonical(precision))
        return ln, {"w": w, "b": b}


@dataclass(frozen=True)
class EmbeddingNet:
    """Stack of ``resnet`` layers with an activation on every layer (DeePMD ``EmbeddingNet``)."""

    in_dim: int
    neuron: tuple[int, ...]
    activation_function: str = "tanh"
    resnet_dt: bool = False
    bias: bool = True
    precision: str = "float64"
    layers: tuple[Layer, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.layers:
            dims = (self.in_dim, *self.neuron)
            layers = tuple(
                Layer(dims[i], dims[i + 1], self.activation_function, self.bias, True,
                      self.resnet_dt and _has_skip(dims[i], dims[i + 1]), self.precision)
                for i in range(len(self.neuron))
            )
            object.__setattr__(self, "layers", layers)

    @property
    def out_dim(self) -> int:
        return self.layers[-1].out_dim if self.layers else self.in_dim

    def init(self, rng: np.random.Generator) -> Params:
        return {"layers": [layer.init(rng) for layer in self.layers]}

    def __call__(self, p: Params, x: Any) -> Any:
        for layer, lp in zip(self.layers, p["layers"], strict=True):
            x = layer(lp, x)
        return x

    def call_selected(self, ps: list[Params], x: Any, index: Any) -> Any:
        """Rows x[f, i] (nf, nloc, n, in_dim) through network ``index[f, i]`` of several
        networks shaped like this one (parameters ``ps``) -> (nf, nloc, n, out_dim).

        Each atom's weights are gathered once, so every row passes through one network only
        (instead of every network with the unwanted results masked away). Where the backend
        vouches that all atoms have the same index (kernel ``uniform_type_params``, see
        polypot.kernels), the rows go through that one network as a single dense product."""
        xp = namespace(x)
        uniform = find_kernel("uniform_type_params", xp)
        q = None if uniform is None else uniform(ps, index)
        if q is not None:
            return self(q, x)
        lead = tuple(index.shape)
        flat = xp.reshape(index, (-1,))
        # rows of a one-hot matrix pick the weights: a matmul (exact, as the other entries are
        # 0 * w), whose backward is a matmul too, where a gather's is a slow scatter-add
        onehot = xp.astype(flat[:, None] == xp.arange(len(ps), dtype=flat.dtype)[None, :],
                           x.dtype)

        def pick(li: int, name: str, trailing: tuple[int, ...]) -> Any:
            if ps[0]["layers"][li].get(name) is None:
                return None
            table = xp.reshape(xp.stack([q["layers"][li][name] for q in ps]), (len(ps), -1))
            return xp.reshape(xp.matmul(onehot, table), (*lead, *trailing))

        for li, layer in enumerate(self.layers):
            lp = {"w": pick(li, "w", (layer.in_dim, layer.out_dim)),
                  "b": pick(li, "b", (1, layer.out_dim)),
                  "idt": pick(li, "idt", (1, layer.out_dim))}
            x = layer(lp, x)
        return x

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "EmbeddingNetwork",
            "@version": 2,
            "in_dim": self.in_dim,
            "neuron": list(self.neuron),
            "activation_function": self.activation_function,
            "resnet_dt": self.resnet_dt,
            "bias": self.bias,
            "precision": canonical(self.precision),
            "layers": [layer.serialize(lp) for layer, lp in zip(self.layers, p["layers"],
                                                                 strict=True)],
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[EmbeddingNet, Params]:
        check_class(data, "EmbeddingNetwork")
        check_version(data, "EmbeddingNetwork", 2, 1)
        pairs = [Layer.deserialize(d) for d in data["layers"]]
        net = cls(
            in_dim=int(data["in_dim"]),
            neuron=tuple(int(n) for n in data["neuron"]),
            activation_function=data.get("activation_function", "tanh"),
            resnet_dt=bool(data.get("resnet_dt", False)),
            bias=bool(data.get("bias", True)),
            precision=canonical(data.get("precision", "float64")),
            layers=tuple(layer for layer, _ in pairs),
        )
        return net, {"layers": [lp for _, lp in pairs]}


@dataclass(frozen=True)
class FittingNet:
    """Hidden ``resnet`` layers then one linear output layer (DeePMD ``FittingNet``)."""

    in_dim: int
    out_dim: int
    neuron: tuple[int, ...]
    activation_function: str = "tanh"
    resnet_dt: bool = True
    precision: str = "float64"
    bias_out: bool = True
    layers: tuple[Layer, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.layers:
            dims = (self.in_dim, *self.neuron)
            hidden = [
                Layer(dims[i], dims[i + 1], self.activation_function, True, True,
                      self.resnet_dt and _has_skip(dims[i], dims[i + 1]), self.precision)
                for i in range(len(self.neuron))
            ]
            last = Layer(dims[-1], self.out_dim, "none", self.bias_out, False, False,
                         self.precision)
            object.__setattr__(self, "layers", (*hidden, last))

    def init(self, rng: np.random.Generator) -> Params:
        return {"layers": [layer.init(rng) for layer in self.layers]}

    def __call__(self, p: Params, x: Any) -> Any:
        for layer, lp in zip(self.layers, p["layers"], strict=True):
            x = layer(lp, x)
        return x

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "FittingNetwork",
            "@version": 1,
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "neuron": list(self.neuron),
            "activation_function": self.activation_function,
            "resnet_dt": self.resnet_dt,
            "precision": canonical(self.precision),
            "bias_out": self.bias_out,
            "layers": [layer.serialize(lp) for layer, lp in zip(self.layers, p["layers"],
                                                                 strict=True)],
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[FittingNet, Params]:
        check_class(data, "FittingNetwork")
        check_version(data, "FittingNetwork", 1)
        pairs = [Layer.deserialize(d) for d in data["layers"]]
        net = cls(
            in_dim=int(data["in_dim"]),
            out_dim=int(data["out_dim"]),
            neuron=tuple(int(n) for n in data["neuron"]),
            activation_function=data.get("activation_function", "tanh"),
            resnet_dt=bool(data.get("resnet_dt", True)),
            precision=canonical(data.get("precision", "float64")),
            bias_out=bool(data.get("bias_out", True)),
            layers=tuple(layer for layer, _ in pairs),
        )
        return net, {"layers": [lp for _, lp in pairs]}


_NETWORK_CLASSES = {
    "embedding_network": EmbeddingNet,
    "fitting_network": FittingNet,
}


@dataclass(frozen=True)
class NetworkCollection:
    """Networks indexed by a tuple of ``ndim`` atom types (flat index ``sum t_i * ntypes**i``).

    ndim 0: one shared net; 1: one per type; 2: one per (type_i, type_j) pair. Absent nets are None.
    """

    ndim: int
    ntypes: int
    network_type: str
    networks: tuple[Any, ...]

    @staticmethod
    def index(key: tuple[int, ...], ntypes: int) -> int:
        return sum(t * ntypes**i for i, t in enumerate(key))

    def net(self, key: tuple[int, ...]) -> Any:
        return self.networks[self.index(key, self.ntypes)]

    def params(self, p: Params, key: tuple[int, ...]) -> Params:
        return p["networks"][self.index(key, self.ntypes)]

    def init(self, rng: np.random.Generator) -> Params:
        return {"networks": [None if n is None else n.init(rng) for n in self.networks]}

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "NetworkCollection",
            "@version": 1,
            "ndim": self.ndim,
            "ntypes": self.ntypes,
            "network_type": self.network_type,
            "networks": [
                None if n is None else n.serialize(np_)
                for n, np_ in zip(self.networks, p["networks"], strict=True)
            ],
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[NetworkCollection, Params]:
        check_class(data, "NetworkCollection")
        check_version(data, "NetworkCollection", 1)
        ntype = data.get("network_type", "network")
        ndim, ntypes = int(data["ndim"]), int(data["ntypes"])
        nets, params = [], []
        for d in data["networks"]:
            if d is None:
                nets.append(None)
                params.append(None)
                continue
            klass = _NETWORK_CLASSES.get(ntype) or {
                "EmbeddingNetwork": EmbeddingNet, "FittingNetwork": FittingNet,
            }.get(d.get("@class"))
            if klass is None:
                raise ModelFormatError(
                    f"NetworkCollection: unsupported network {d.get('@class')!r}"
                )
            n, np_ = klass.deserialize(d)
            nets.append(n)
            params.append(np_)
        if len(nets) != ntypes**ndim:
            raise ModelFormatError(
                f"NetworkCollection: expected {ntypes**ndim} networks for ntypes={ntypes}, "
                f"ndim={ndim}, found {len(nets)}"
            )
        return cls(ndim, ntypes, ntype, tuple(nets)), {"networks": params}


@dataclass(frozen=True)
class TypeEmbedNet:
    """Type embedding table: ``net(one_hot(t))`` for each type, plus a zero padding row."""

    ntypes: int
    neuron: tuple[int, ...]
    activation_function: str = "tanh"
    resnet_dt: bool = False
    precision: str = "float64"
    padding: bool = True
    use_tebd_bias: bool = False
    type_map: tuple[str, ...] | None = None
    trainable: bool = True
    net: EmbeddingNet | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.net is None:
            object.__setattr__(self, "net", EmbeddingNet(
                self.ntypes, self.neuron, self.activation_function, self.resnet_dt,
                self.use_tebd_bias, self.precision,
            ))

    @property
    def dim(self) -> int:
        return self.neuron[-1]

    def init(self, rng: np.random.Generator) -> Params:
        return {"embedding": self.net.init(rng)}

    def __call__(self, p: Params, xp: Any) -> Any:
        """Embedding table (ntypes + padding, dim)."""
        w0 = p["embedding"]["layers"][0]["w"]
        eye = xp.eye(self.ntypes, dtype=w0.dtype)
        table = self.net(p["embedding"], eye)
        if self.padding:
            table = xp.concat([table, xp.zeros((1, table.shape[1]), dtype=table.dtype)], axis=0)
        return table

    def serialize(self, p: Params) -> dict:
        return {
            "@class": "TypeEmbedNet",
            "@version": 2,
            "ntypes": self.ntypes,
            "neuron": list(self.neuron),
            "resnet_dt": self.resnet_dt,
            "precision": canonical(self.precision),
            "activation_function": self.activation_function,
            "trainable": self.trainable,
            "padding": self.padding,
            "use_econf_tebd": False,
            "use_tebd_bias": self.use_tebd_bias,
            "type_map": None if self.type_map is None else list(self.type_map),
            "embedding": self.net.serialize(p["embedding"]),
        }

    @classmethod
    def deserialize(cls, data: dict) -> tuple[TypeEmbedNet, Params]:
        check_class(data, "TypeEmbedNet")
        check_version(data, "TypeEmbedNet", 2)
        if data.get("use_econf_tebd", False):
            raise ModelFormatError(
                "TypeEmbedNet: use_econf_tebd=true (electronic-configuration type embedding) "
                "is not supported yet"
            )
        net, p = EmbeddingNet.deserialize(data["embedding"])
        tm = data.get("type_map")
        obj = cls(
            ntypes=int(data["ntypes"]),
            neuron=tuple(int(n) for n in data["neuron"]),
            activation_function=data.get("activation_function", "tanh"),
            resnet_dt=bool(data.get("resnet_dt", False)),
            precision=canonical(data.get("precision", "float64")),
            padding=bool(data.get("padding", True)),
            use_tebd_bias=bool(data.get("use_tebd_bias", False)),
            type_map=None if tm is None else tuple(tm),
            trainable=bool(data.get("trainable", True)),
            net=net,
        )
        return obj, {"embedding": p}
