"""Build a fresh model (structure + random parameters) from a DeePMD-kit ``model`` input section."""

from __future__ import annotations

from typing import Any

import numpy as np

from .atomic_model import DPAtomicModel
from .descriptor.dpa2 import DescrptDPA2, RepformerArgs, RepinitArgs
from .descriptor.se_atten import DescrptSeAtten
from .descriptor.se_e2_a import DescrptSeA
from .errors import ModelFormatError
from .fitting.ener import EnergyFitting
from .model import EnergyModel
from .network import Params
from .registry import descriptor_class


def _pairs(x: Any) -> tuple[tuple[int, int], ...]:
    return tuple((int(a), int(b)) for a, b in (x or []))


def _descriptor(cfg: dict, ntypes: int, type_map: tuple[str, ...]) -> Any:
    kind = str(cfg.get("type", "")).lower()
    klass = descriptor_class(kind)  # raises a clear error for unknown types
    precision = cfg.get("precision", "float64")
    common = dict(
        rcut=float(cfg.get("rcut", 6.0)),
        rcut_smth=float(cfg.get("rcut_smth", 0.5)),
        neuron=tuple(cfg.get("neuron", (25, 50, 100))),
        axis_neuron=int(cfg.get("axis_neuron", 16)),
        resnet_dt=bool(cfg.get("resnet_dt", False)),
        exclude_types=_pairs(cfg.get("exclude_types")),
        env_protection=float(cfg.get("env_protection", 0.0)),
        activation_function=cfg.get("activation_function", "tanh"),
        precision="float64" if precision == "default" else precision,
        type_map=type_map,
    )
    if klass is DescrptSeA:
        sel = cfg.get("sel")
        if not isinstance(sel, list) or len(sel) != ntypes:
            raise ModelFormatError(
                f"descriptor se_e2_a: 'sel' must be a list of {ntypes} ints (one per type), "
                f"got {sel!r}"
            )
        return DescrptSeA(sel=tuple(int(s) for s in sel),
                          type_one_side=bool(cfg.get("type_one_side", False)),
                          set_davg_zero=bool(cfg.get("set_davg_zero", False)), **common)
    if klass is DescrptSeAtten:
        sel = cfg.get("sel", 120)
        sel = int(sum(sel)) if isinstance(sel, list) else int(sel)
        v2 = kind == "se_atten_v2"
        return DescrptSeAtten(
            sel=sel, ntypes=ntypes,
            tebd_dim=int(cfg.get("tebd_dim", 8)),
            tebd_input_mode="strip" if v2 else cfg.get("tebd_input_mode", "concat"),
            type_one_side=bool(cfg.get("type_one_side", False)),
            attn=int(cfg.get("attn", 128)), attn_layer=int(cfg.get("attn_layer", 2)),
            attn_dotr=bool(cfg.get("attn_dotr", True)), attn_mask=bool(cfg.get("attn_mask", False)),
            set_davg_zero=bool(cfg.get("set_davg_zero", not v2)),
            scaling_factor=float(cfg.get("scaling_factor", 1.0)),
            normalize=bool(cfg.get("normalize", True)), temperature=cfg.get("temperature"),
            trainable_ln=bool(cfg.get("trainable_ln", True)),
            ln_eps=float(cfg.get("ln_eps") or 1e-5),
            smooth_type_embedding=True if v2 else bool(cfg.get("smooth_type_embedding", False)),
            concat_output_tebd=bool(cfg.get("concat_output_tebd", True)),
            use_tebd_bias=bool(cfg.get("use_tebd_bias", False)),
            type_name="se_atten_v2" if v2 else "dpa1", **common,
        )
    if klass is DescrptDPA2:
        return _dpa2(cfg, ntypes, type_map, common["precision"])
    raise ModelFormatError(f"descriptor type {kind!r} cannot be built from an input yet")


def _dpa2(cfg: dict, ntypes: int, type_map: tuple[str, ...], precision: str) -> DescrptDPA2:
    for key in ("repinit", "repformer"):
        if not isinstance(cfg.get(key), dict):
            raise ModelFormatError(f"descriptor dpa2: {key!r} section (a dict) is required")
    skip = {"type"}  # keys of the input that are not model structure
    repinit = {k: v for k, v in cfg["repinit"].items() if k not in skip}
    repformer = {k: v for k, v in cfg["repformer"].items() if k not in skip}
    if cfg.get("use_econf_tebd", False):
        raise ModelFormatError("descriptor dpa2: use_econf_tebd is not supported yet")
    return DescrptDPA2(
        ntypes=ntypes,
        repinit=RepinitArgs.from_dict(repinit),
        repformer=RepformerArgs.from_dict(repformer),
        concat_output_tebd=bool(cfg.get("concat_output_tebd", True)),
        precision=precision, smooth=bool(cfg.get("smooth", True)),
        exclude_types=_pairs(cfg.get("exclude_types")),
        env_protection=float(cfg.get("env_protection", 0.0)),
        trainable=bool(cfg.get("trainable", True)),
        add_tebd_to_repinit_out=bool(cfg.get("add_tebd_to_repinit_out", False)),
        use_tebd_bias=bool(cfg.get("use_tebd_bias", False)),
        type_map=type_map,
    )


def build_model(cfg: dict, seed: int | None = None) -> tuple[EnergyModel, Params]:
    """Model and freshly initialised parameters from a ``model`` section of input.json.

    Keys as DeePMD-kit: ``type_map``, ``descriptor`` (``type`` se_e2_a / se_atten / se_atten_v2 /
    dpa1 ...), ``fitting_net`` (``neuron``, ``resnet_dt``, ``activation_function``, ``precision``).
    """
    if "type_map" not in cfg:
        raise ModelFormatError("model: 'type_map' is required (list of element names)")
    type_map = tuple(cfg["type_map"])
    ntypes = len(type_map)
    if "descriptor" not in cfg:
        raise ModelFormatError("model: 'descriptor' section is required")
    desc = _descriptor(cfg["descriptor"], ntypes, type_map)
    fcfg = cfg.get("fitting_net", {})
    if fcfg.get("type", "ener") != "ener":
        raise ModelFormatError(f"fitting_net type {fcfg.get('type')!r} is not supported yet")
    fprec = fcfg.get("precision", "float64")
    fit = EnergyFitting(
        ntypes=ntypes, dim_descrpt=desc.dim_out,
        neuron=tuple(fcfg.get("neuron", (120, 120, 120))),
        resnet_dt=bool(fcfg.get("resnet_dt", True)),
        activation_function=fcfg.get("activation_function", "tanh"),
        precision="float64" if fprec == "default" else fprec,
        mixed_types=desc.mixed_types, type_map=type_map,
        exclude_types=tuple(int(t) for t in fcfg.get("exclude_types", []) or []),
    )
    atomic = DPAtomicModel(
        type_map=type_map, descriptor=desc, fitting=fit,
        atom_exclude_types=tuple(int(t) for t in cfg.get("atom_exclude_types", []) or []),
        pair_exclude_types=_pairs(cfg.get("pair_exclude_types")),
    )
    rng = np.random.default_rng(seed)
    model = EnergyModel(atomic)
    return model, model.init(rng)
