"""Check a DeePMD-kit v3 training input (``input.json``) and fill in its defaults.

The schema is written with ``dargs``, the argument-checking library DeePMD-kit itself uses, with
DeePMD-kit's key names, aliases and defaults for the model kinds polypot trains; DeePMD-kit keys
that polypot does not implement are refused as unknown rather than silently ignored. ``dargs``
errors become :class:`InputError`, whose message names the input file, the key path
(``training/training_data/batch_size``) and what was expected; an unknown key comes with the
closest allowed key. Keys starting with ``_`` (``_comment``) are allowed anywhere and dropped.

Checks that ``dargs`` cannot express (positive step counts, ``sel`` length, ``batch_size``
strings, ...) are done afterwards by :func:`normalize`.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args, get_origin

from dargs import Argument, Variant
from dargs.dargs import ArgumentError, ArgumentTypeError  # not re-exported by the package

__all__ = [
    "InputError",
    "input_args",
    "learning_rate_args",
    "load_input",
    "loss_args",
    "model_args",
    "normalize",
    "training_args",
    "write_normalized",
]

#: keys matching this glob pattern are comments: accepted anywhere and dropped
TRIM_PATTERN = "_*"

_REQUIRED = object()

# type names DeePMD-kit knows but polypot cannot train yet: refused with "not supported yet"
_DEEPMD_ONLY = {
    "descriptor": {
        "dpa3", "hybrid", "se_e2_r", "se_r", "se_e3", "se_at", "se_a_3be", "se_t",
        "se_e3_tebd", "se_a_ebd_v2", "se_a_tpe", "se_a_ebd", "se_a_mask", "loc_frame",
        "se_e2_a_tebd",
    },
    "fitting_net": {"dipole", "polar", "dos", "property", "global_polar"},
    "loss": {"ener_spin", "dos", "tensor", "property"},
    "learning_rate": {"cosine", "wsd"},
}


class InputError(ValueError):
    """A training input is unreadable or does not match the schema.

    ``path`` is the key path inside the input (``"training/numb_steps"``, ``""`` for the whole
    input) and ``source`` the input file name, when known; both are part of the message.
    """

    def __init__(self, message: str, path: str = "", source: str | None = None) -> None:
        self.message = message
        self.path = path
        self.source = None if source is None else str(source)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [p for p in (self.source, self.path) if p]
        return ": ".join([*where, self.message])


# ---- schema ------------------------------------------------------------------------------------
def _opt(name: str, dtype: Any, default: Any = _REQUIRED, alias: Iterable[str] = (),
         doc: str = "") -> Argument:
    """An argument; optional (with ``default``) unless ``default`` is left out."""
    if default is _REQUIRED:
        return Argument(name, dtype, alias=list(alias), doc=doc)
    return Argument(name, dtype, optional=True, default=default, alias=list(alias), doc=doc)


def _net_common(neuron: list[int], resnet_dt: bool) -> list[Argument]:
    return [
        _opt("neuron", list[int], neuron, alias=["n_neuron"],
             doc="widths of the hidden layers"),
        _opt("activation_function", str, "tanh"),
        _opt("resnet_dt", bool, resnet_dt, doc="learnable timestep in the skip connections"),
        _opt("precision", str, "default", doc="float64, float32 or default (float64)"),
        _opt("trainable", bool, True),
        _opt("seed", [int, None], None, doc="random seed of the initial parameters"),
    ]


def _se_e2_a() -> Argument:
    fields = [
        _opt("sel", [list[int], str], "auto",
             doc="neighbours kept per type (one entry per type_map entry), or 'auto[:factor]'"),
        _opt("rcut", float, 6.0, doc="cut-off radius"),
        _opt("rcut_smth", float, 0.5, doc="radius where the smooth switch-off starts"),
        *_net_common([10, 20, 40], False),
        _opt("axis_neuron", int, 4, alias=["n_axis_neuron"]),
        _opt("type_one_side", bool, False),
        _opt("exclude_types", list[list[int]], []),
        _opt("env_protection", float, 0.0),
        _opt("set_davg_zero", bool, False),
    ]
    return Argument("se_e2_a", dict, fields, alias=["se_a"], doc="smooth edition, two-body")


def _attention_fields(v2: bool) -> list[Argument]:
    fields = [
        _opt("sel", [int, list[int], str], "auto",
             doc="total neighbour count (a list is summed), or 'auto[:factor]'"),
        _opt("rcut", float, 6.0),
        _opt("rcut_smth", float, 0.5),
        *_net_common([25, 50, 100], False),
        _opt("axis_neuron", int, 16, alias=["n_axis_neuron"]),
        _opt("tebd_dim", int, 8, doc="width of the type embedding"),
        _opt("type_one_side", bool, False),
        _opt("attn", int, 128, doc="width of the attention hidden layer"),
        _opt("attn_layer", int, 2, doc="number of attention layers"),
        _opt("attn_dotr", bool, True),
        _opt("attn_mask", bool, False),
        _opt("scaling_factor", float, 1.0),
        _opt("normalize", bool, True),
        _opt("temperature", [float, None], None),
        _opt("concat_output_tebd", bool, True),
        _opt("set_davg_zero", bool, True),
        _opt("exclude_types", list[list[int]], []),
        _opt("env_protection", float, 0.0),
        _opt("ln_eps", [float, None], None),
        _opt("use_econf_tebd", bool, False),
        _opt("use_tebd_bias", bool, False),
        _opt("trainable_ln", bool, True),
    ]
    if not v2:  # se_atten_v2 fixes these two ("strip" and True)
        fields += [
            _opt("tebd_input_mode", str, "concat", doc="'concat' or 'strip'"),
            _opt("smooth_type_embedding", bool, False),
        ]
    return fields


_NSEL_DOC = ("neighbours kept inside rcut, all types together: an int (DeePMD-kit also takes "
             "'auto' or 'auto:factor', which polypot does not support yet for dpa2)")


def _dpa2_repinit() -> Argument:
    fields = [
        _opt("rcut", float, doc="cut-off radius of the repinit block"),
        _opt("rcut_smth", float, doc="radius where the smooth switch-off of 1/r starts"),
        _opt("nsel", [int, str], doc=_NSEL_DOC),
        _opt("neuron", list[int], [25, 50, 100], doc="widths of the embedding-net layers"),
        _opt("axis_neuron", int, 16,
             doc="number of embedding columns used as the second factor of G^T R R^T G"),
        _opt("tebd_dim", int, 8, doc="width of the atom-type embedding"),
        _opt("tebd_input_mode", str, "concat",
             doc="'concat' (type embedding joined to the radial input of the embedding net) or "
                 "'strip' (a separate type net whose output scales the radial one)"),
        _opt("set_davg_zero", bool, True, doc="keep the environment-matrix mean at zero"),
        _opt("activation_function", str, "tanh", doc="activation of the embedding net"),
        _opt("type_one_side", bool, False,
             doc="embedding depends on the neighbour type only, not on the centre type"),
        _opt("resnet_dt", bool, False, doc="learnable timestep in the skip connections"),
        _opt("use_three_body", bool, False,
             doc="append a three-body (angle) embedding to the repinit output"),
        _opt("three_body_neuron", list[int], [2, 4, 8],
             doc="widths of the three-body embedding-net layers"),
        _opt("three_body_rcut", float, 4.0, doc="cut-off radius of the three-body part"),
        _opt("three_body_rcut_smth", float, 0.5,
             doc="radius where the three-body switch-off starts"),
        _opt("three_body_sel", [int, str], 40,
             doc="neighbours kept by the three-body part (an int, as for nsel)"),
    ]
    return Argument("repinit", dict, fields,
                    doc="first DPA-2 block: a DPA-1-like embedding giving the initial per-atom "
                        "features")


def _dpa2_repformer() -> Argument:
    update = "use the {} term in the {} update"
    fields = [
        _opt("rcut", float, doc="cut-off radius of the repformer block (< repinit rcut)"),
        _opt("rcut_smth", float, doc="radius where the smooth switch-off of 1/r starts"),
        _opt("nsel", [int, str], doc=_NSEL_DOC + "; less than repinit nsel"),
        _opt("nlayers", int, 3, doc="number of repformer layers"),
        _opt("g1_dim", int, 128, doc="width of the per-atom invariant features g1"),
        _opt("g2_dim", int, 16, doc="width of the per-pair invariant features g2"),
        _opt("axis_neuron", int, 4, doc="columns kept in the symmetrisation operations"),
        _opt("direct_dist", bool, False,
             doc="build g2 from the plain distance instead of the switched 1/r"),
        _opt("update_g1_has_conv", bool, True, doc=update.format("convolution", "g1")),
        _opt("update_g1_has_drrd", bool, True, doc=update.format("drrd", "g1")),
        _opt("update_g1_has_grrg", bool, True, doc=update.format("grrg", "g1")),
        _opt("update_g1_has_attn", bool, True,
             doc=update.format("local self-attention", "g1")),
        _opt("update_g2_has_g1g1", bool, True, doc=update.format("g1 x g1", "g2")),
        _opt("update_g2_has_attn", bool, True,
             doc=update.format("gated self-attention", "g2")),
        _opt("update_h2", bool, False, doc="also update the equivariant pair features h2"),
        _opt("attn1_hidden", int, 64, doc="hidden width of the g1 attention"),
        _opt("attn1_nhead", int, 4, doc="heads of the g1 attention"),
        _opt("attn2_hidden", int, 16, doc="hidden width of the g2 attention"),
        _opt("attn2_nhead", int, 4, doc="heads of the g2 attention"),
        _opt("attn2_has_gate", bool, False, doc="gate the g2 attention"),
        _opt("activation_function", str, "tanh", doc="activation inside the layers"),
        _opt("update_style", str, "res_avg",
             doc="how a feature u is combined with its updates u_1..u_n: 'res_avg' "
                 "(mean-like, (u + sum u_k) / sqrt(n + 1)), 'res_incr' (u + sum u_k / sqrt(n)) "
                 "or 'res_residual' (u + sum r_k u_k with learnt weights r_k)"),
        _opt("update_residual", float, 0.001,
             doc="'res_residual' only: scale of the initial residual weights"),
        _opt("update_residual_init", str, "norm",
             doc="'res_residual' only: residual weights drawn from a normal law ('norm') or "
                 "all equal to update_residual ('const')"),
        _opt("set_davg_zero", bool, True, doc="keep the environment-matrix mean at zero"),
        _opt("trainable_ln", bool, True, doc="learnable scale and shift in layer norms"),
        _opt("use_sqrt_nnei", bool, True,
             doc="divide the symmetrisation by sqrt(nsel) rather than by nsel"),
        _opt("g1_out_conv", bool, True,
             doc="keep the g1 convolution update as its own branch, outside the joint MLP"),
        _opt("g1_out_mlp", bool, True,
             doc="keep the g1 self-MLP update as its own branch, outside the joint MLP"),
        _opt("ln_eps", [float, None], None, doc="layer-norm epsilon; null means 1e-5"),
    ]
    return Argument("repformer", dict, fields,
                    doc="second DPA-2 block: layers refining per-atom and per-pair features "
                        "inside a smaller cut-off")


def _dpa2() -> Argument:
    fields = [
        _dpa2_repinit(),
        _dpa2_repformer(),
        _opt("concat_output_tebd", bool, True,
             doc="append the type embedding to the descriptor output"),
        _opt("precision", str, "default", doc="float64, float32 or default (float64)"),
        _opt("smooth", bool, True, doc="keep the attention weights smooth at the cut-off"),
        _opt("exclude_types", list[list[int]], [], doc="type pairs that do not interact"),
        _opt("env_protection", float, 0.0,
             doc="small number guarding divisions by zero distances (padding)"),
        _opt("trainable", bool, True),
        _opt("seed", [int, None], None, doc="random seed of the initial parameters"),
        _opt("add_tebd_to_repinit_out", bool, False, alias=["repformer_add_type_ebd_to_seq"],
             doc="add the type embedding to the repinit output before repformer"),
        _opt("use_econf_tebd", bool, False,
             doc="type embedding from electronic configurations (not supported yet)"),
        _opt("use_tebd_bias", bool, False, doc="bias in the type-embedding layer"),
    ]
    return Argument("dpa2", dict, fields,
                    doc="DPA-2: repinit then repformer blocks, each with its own cut-off")


def _descriptor() -> Argument:
    variant = Variant("type", [
        _se_e2_a(),
        Argument("se_atten", dict, _attention_fields(False), alias=["dpa1"],
                 doc="attention-based descriptor (DPA-1)"),
        Argument("se_atten_v2", dict, _attention_fields(True),
                 doc="DPA-1 with strip type embedding and smooth attention"),
        _dpa2(),
    ], doc="descriptor kind")
    return Argument("descriptor", dict, [], [variant], doc="the descriptor")


def _fitting_net() -> Argument:
    ener = [
        *_net_common([120, 120, 120], True),
        _opt("rcond", [float, None], None),
        _opt("numb_fparam", int, 0),
        _opt("numb_aparam", int, 0),
        _opt("atom_ener", list, []),
        _opt("use_aparam_as_mask", bool, False),
    ]
    variant = Variant("type", [Argument("ener", dict, ener, doc="energy fitting")],
                      optional=True, default_tag="ener", doc="fitting kind")
    return Argument("fitting_net", dict, [], [variant], optional=True, default={},
                    doc="the fitting network")


def model_args() -> Argument:
    """Schema of the ``model`` section."""
    fields = [
        _opt("type_map", list[str], doc="element names; type i is type_map[i]"),
        _descriptor(),
        _fitting_net(),
        _opt("data_stat_nbatch", int, 10, doc="batches used for the data statistics"),
        _opt("data_stat_protect", float, 1e-2),
        _opt("pair_exclude_types", list[list[int]], []),
        _opt("atom_exclude_types", list[int], []),
    ]
    return Argument("model", dict, fields, doc="the model")


def learning_rate_args() -> Argument:
    """Schema of the ``learning_rate`` section."""
    exp = [
        _opt("start_lr", float, 1e-3),
        _opt("stop_lr", float, 1e-8),
        _opt("decay_steps", int, 5000),
        _opt("scale_by_worker", str, "linear", doc="'linear', 'sqrt' or 'none'"),
    ]
    variant = Variant("type", [Argument("exp", dict, exp, doc="exponential decay")],
                      optional=True, default_tag="exp")
    return Argument("learning_rate", dict, [], [variant], optional=True, default={},
                    doc="the learning-rate schedule")


def loss_args() -> Argument:
    """Schema of the ``loss`` section."""
    ener = [
        _opt(f"{when}_pref_{what}", float, default)
        for what, start, limit in (("e", 0.02, 1.0), ("f", 1000.0, 1.0), ("v", 0.0, 0.0),
                                   ("ae", 0.0, 0.0))
        for when, default in (("start", start), ("limit", limit))
    ]
    variant = Variant("type", [Argument("ener", dict, ener, doc="energy/force/virial loss")],
                      optional=True, default_tag="ener")
    return Argument("loss", dict, [], [variant], optional=True, default={}, doc="the loss")


def _data_fields(validation: bool) -> list[Argument]:
    fields = [
        _opt("systems", [str, list[str]], doc="system folders, or one folder to search"),
        _opt("batch_size", [int, str], "auto", doc="an int, 'auto' or 'auto:N'"),
        _opt("auto_prob", str, "prob_sys_size", alias=["auto_prob_style"]),
        _opt("sys_probs", [list[float], None], None, alias=["sys_weights"]),
    ]
    if validation:
        fields.append(_opt("numb_btch", int, 1, alias=["numb_batch"]))
    return fields


def training_args() -> Argument:
    """Schema of the ``training`` section."""
    fields = [
        Argument("training_data", dict, _data_fields(False), doc="training systems"),
        Argument("validation_data", [dict, None], _data_fields(True), optional=True,
                 default=None, doc="validation systems"),
        _opt("numb_steps", int, alias=["stop_batch"], doc="number of training steps"),
        _opt("seed", [int, None], None),
        _opt("disp_file", str, "lcurve.out"),
        _opt("disp_freq", int, 1000),
        _opt("save_freq", int, 1000),
        _opt("save_ckpt", str, "model.ckpt"),
        _opt("max_ckpt_keep", int, 5),
        _opt("disp_training", bool, True),
        _opt("time_training", bool, True),
        _opt("profiling", bool, False),
        _opt("tensorboard", bool, False, doc="accepted, ignored"),
        _opt("tensorboard_log_dir", str, "log", doc="accepted, ignored"),
        _opt("tensorboard_freq", int, 1, doc="accepted, ignored"),
        _opt("change_bias_after_training", bool, False),
    ]
    return Argument("training", dict, fields, doc="the training loop")


def input_args() -> Argument:
    """Schema of the whole input."""
    return Argument("input", dict, [model_args(), learning_rate_args(), loss_args(),
                                    training_args()])


# ---- dargs errors to InputError ----------------------------------------------------------------
def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _lookup(root: Argument, data: Any, path: str) -> tuple[Argument | None, Any]:
    """The schema entry and the value at ``path`` (``None, None`` when it cannot be followed)."""
    arg, value = root, data
    for part in filter(None, path.split("/")):
        if not isinstance(value, dict):
            return None, None
        try:
            subs = arg.flatten_sub(value)
        except (ArgumentError, ValueError):
            return None, None
        if part not in subs:
            return None, None
        arg, value = subs[part], value.get(part)
    return arg, value


def _type_name(t: Any) -> str:
    if t is None or t is type(None):
        return "null"
    if get_origin(t) is not None:
        args = ", ".join(_type_name(a) for a in get_args(t))
        return f"{get_origin(t).__name__}[{args}]"
    return getattr(t, "__name__", str(t))


def _value_type(value: Any) -> str:
    """The type of a given value, with element types for lists (``list[int | str]``)."""
    if value is None:
        return "null"
    if isinstance(value, list) and value:
        names = sorted({_value_type(v) for v in value})
        return f"list[{' | '.join(names)}]"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _where(path: str) -> str:
    return f"'{path}'" if path else "the top level"


def _choice_error(root: Argument, data: Any, path: str, flag: str, tag: Any) -> InputError:
    arg, _ = _lookup(root, data, path)
    variant = None if arg is None else next(
        (v for v in arg.sub_variants.values() if v.flag_name == flag), None)
    if variant is None:
        return InputError(f"invalid {flag} {tag!r}", _join(path, flag))
    names = [*variant.choice_dict, *variant.choice_alias]
    listed = ", ".join(
        name + "".join(f" (alias {a})" for a, n in variant.choice_alias.items() if n == name)
        for name in variant.choice_dict
    )
    section = path.rsplit("/", 1)[-1] or "input"
    if not isinstance(tag, str):
        return InputError(f"expected a string naming the {section} {flag} ({listed}), got "
                          f"{_value_type(tag)} ({_short(tag)})", _join(path, flag))
    yet = " yet" if tag in _DEEPMD_ONLY.get(section, ()) else ""
    message = f"{section} {flag} {tag!r} is not supported{yet}; supported: {listed}"
    close = difflib.get_close_matches(tag, names, n=1)
    if close and not yet:
        message += f"; did you mean {close[0]!r}?"
    return InputError(message, _join(path, flag))


def _other_choices(arg: Argument | None, value: Any, key: str) -> str:
    """Where ``key`` would be allowed: another choice of a variant (``type``) at this level."""
    if arg is None or not isinstance(value, dict):
        return ""
    for variant in arg.sub_variants.values():
        owners = [name for name, choice in variant.choice_dict.items()
                  if key in choice.sub_fields]
        if owners:
            tag = value.get(variant.flag_name, variant.default_tag)
            return (f"it is not used with {variant.flag_name} {tag!r}, only with "
                    f"{', '.join(owners)}")
    return ""


def _translate(err: ArgumentError, root: Argument, data: Any) -> InputError:
    """Rewrite a dargs error as an InputError with the full key path and a plain message."""
    path, text = err.path, str(err.message or "")
    quoted = re.findall(r"`([^`]*)`", text)
    key = quoted[0] if quoted else ""
    if "not allowed in strict mode" in text:
        arg, value = _lookup(root, data, path)
        allowed: list[str] = []
        if arg is not None and isinstance(value, dict):
            try:
                allowed = sorted(arg.flatten_sub(value))
            except (ArgumentError, ValueError):
                allowed = []
        close = difflib.get_close_matches(key, allowed, n=1)
        if not close:  # fall back on dargs' own suggestion
            close = re.findall(r"Did you mean:? `?([^`?\s]+)`?\?", text)
        message = f"unknown key {key!r} in {_where(path)}"
        other = _other_choices(arg, value, key)
        if other:
            message += f" ({other})"
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif allowed:
            message += f"; allowed keys: {', '.join(allowed)}"
        return InputError(message, _join(path, key))
    if "required to choose variant" in text:
        arg, _ = _lookup(root, data, path)
        choices = []
        for variant in [] if arg is None else arg.sub_variants.values():
            if variant.flag_name == key:
                choices = list(variant.choice_dict)
        hint = f" (one of: {', '.join(choices)})" if choices else ""
        return InputError(f"missing required key {key!r} in {_where(path)}{hint}",
                          _join(path, key))
    if "required in arguments" in text:
        return InputError(f"missing required key {key!r} in {_where(path)}", _join(path, key))
    if "invalid choice" in text and len(quoted) >= 2:
        return _choice_error(root, data, path, quoted[1], quoted[0])
    if isinstance(err, ArgumentTypeError) and key:
        if "expected choices" in text:  # a variant flag (``type``) that is not a string
            _, section = _lookup(root, data, path)
            tag = section.get(key) if isinstance(section, dict) else None
            return _choice_error(root, data, path, key, tag)
        arg, value = _lookup(root, data, _join(path, key))
        if arg is not None:
            return _type_error(_join(path, key), arg.dtype, value)
    return InputError(text, path)


def _type_error(path: str, dtype: Iterable[Any], value: Any) -> InputError:
    names = [_type_name(t) for t in dtype]
    expected = " or ".join(sorted(names, key=lambda n: (n == "null", n)))
    return InputError(f"expected {expected}, got {_value_type(value)} ({_short(value)})", path)


def _no_bools(root: Argument, data: dict) -> None:
    """Refuse true/false where a number is expected (Python counts bool as an int)."""

    def numeric(t: Any) -> bool:
        return t in (int, float)

    def hook(arg: Argument, value: Any, path: list[str]) -> None:
        if bool in arg.dtype:
            return
        number_list = any(get_origin(t) is list and any(numeric(a) for a in get_args(t))
                          for t in arg.dtype)
        if (isinstance(value, bool) and any(numeric(t) for t in arg.dtype)) or (
                isinstance(value, list) and number_list
                and any(isinstance(v, bool) for v in value)):
            raise _type_error(_join(*path, arg.name), arg.dtype, value)

    root.traverse_value(data, value_hook=hook)


# ---- checks dargs cannot express ---------------------------------------------------------------
_AUTO = re.compile(r"auto(?::(.+))?")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_positive(section: dict, path: str, keys: Iterable[str], strict: bool = True) -> None:
    for key in keys:
        value = section.get(key)
        if value is None:
            continue
        if value <= 0 if strict else value < 0:
            need = "> 0" if strict else ">= 0"
            raise InputError(f"must be {need}, got {_short(value)}", _join(path, key))


def _check_choice(value: str, path: str, allowed: Iterable[str], what: str,
                  ignore_case: bool = True) -> None:
    allowed = list(allowed)
    fold = str.lower if ignore_case else str
    if fold(value) not in {fold(a) for a in allowed}:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}{hint}",
                         path)


def _check_batch_size(value: Any, path: str) -> None:
    if _is_int(value):
        if value <= 0:
            raise InputError(f"batch size must be > 0, got {value}", path)
        return
    match = _AUTO.fullmatch(value)
    if match is None or (match.group(1) is not None
                         and not (match.group(1).isdigit() and int(match.group(1)) > 0)):
        raise InputError(
            f"expected a positive int, 'auto' or 'auto:N' (N a positive int), got {value!r}", path)


def _check_sel(desc: dict, path: str, ntypes: int) -> None:
    sel = desc["sel"]
    if isinstance(sel, str):
        match = _AUTO.fullmatch(sel)
        ok = match is not None
        if ok and match.group(1) is not None:
            try:
                ok = float(match.group(1)) > 0
            except ValueError:
                ok = False
        if not ok:
            raise InputError(f"expected 'auto' or 'auto:factor' (factor a positive number), got "
                             f"{sel!r}", _join(path, "sel"))
        return
    counts = [sel] if _is_int(sel) else sel
    if any(n < 0 for n in counts) or sum(counts) <= 0:
        raise InputError(f"neighbour counts must be >= 0 with a positive total, got {sel}",
                         _join(path, "sel"))
    if desc["type"] == "se_e2_a" and len(sel) != ntypes:
        raise InputError(f"sel has {len(sel)} entries but type_map has {ntypes} types; give one "
                         "neighbour count per type", _join(path, "sel"))


def _check_type_pairs(pairs: list[list[int]], path: str, ntypes: int) -> None:
    for pair in pairs:
        if len(pair) != 2 or any(not 0 <= t < ntypes for t in pair):
            raise InputError(f"expected pairs of type indices in [0, {ntypes}), got {pair}", path)


def _check_activation(section: dict, path: str) -> None:
    from ..model.network import ACTIVATIONS

    _check_choice(section["activation_function"], _join(path, "activation_function"),
                  ACTIVATIONS, "activation function")


def _check_precision(section: dict, path: str) -> None:
    from ..model.precision import PRECISIONS

    _check_choice(section["precision"], _join(path, "precision"), PRECISIONS, "precision")


def _check_widths(section: dict, path: str, key: str = "neuron") -> None:
    if not section[key] or any(n <= 0 for n in section[key]):
        raise InputError(f"expected a non-empty list of positive layer widths, got "
                         f"{section[key]}", _join(path, key))


def _check_net(section: dict, path: str) -> None:
    _check_activation(section, path)
    _check_precision(section, path)
    _check_widths(section, path)


def _check_cutoff(section: dict, path: str, rcut: str = "rcut", smth: str = "rcut_smth") -> None:
    _check_positive(section, path, [rcut])
    if not 0 <= section[smth] < section[rcut]:
        raise InputError(f"expected 0 <= {smth} < {rcut} ({section[rcut]}), got "
                         f"{section[smth]}", _join(path, smth))


def _check_nsel(section: dict, path: str, key: str) -> None:
    """A dpa2 neighbour count: a positive int ("auto" needs a neighbour statistic for each
    block, which training does not compute for dpa2 yet)."""
    value = section[key]
    if isinstance(value, str):
        if _AUTO.fullmatch(value):
            raise InputError(f"{value!r} is not supported yet for dpa2; give {key} as a positive "
                             "int (the largest number of neighbours inside the cut-off, all "
                             "types together)", _join(path, key))
        raise InputError(f"expected a positive int, got {value!r}", _join(path, key))
    _check_positive(section, path, [key])


def _check_dpa2(desc: dict, path: str, ntypes: int) -> None:
    ipath, fpath = _join(path, "repinit"), _join(path, "repformer")
    init, form = desc["repinit"], desc["repformer"]
    _check_precision(desc, path)
    _check_type_pairs(desc["exclude_types"], _join(path, "exclude_types"), ntypes)
    _check_positive(desc, path, ["env_protection"], strict=False)
    if desc["use_econf_tebd"]:
        raise InputError("true (electronic-configuration type embedding) is not supported yet; "
                         "set it to false", _join(path, "use_econf_tebd"))

    _check_cutoff(init, ipath)
    _check_nsel(init, ipath, "nsel")
    _check_activation(init, ipath)
    _check_widths(init, ipath)
    _check_positive(init, ipath, ["axis_neuron", "tebd_dim"])
    _check_choice(init["tebd_input_mode"], _join(ipath, "tebd_input_mode"), ("concat", "strip"),
                  "tebd_input_mode", ignore_case=False)

    _check_cutoff(form, fpath)
    _check_nsel(form, fpath, "nsel")
    _check_activation(form, fpath)
    _check_positive(form, fpath, ["g1_dim", "g2_dim", "axis_neuron", "attn1_hidden",
                                  "attn1_nhead", "attn2_hidden", "attn2_nhead", "ln_eps"])
    _check_positive(form, fpath, ["nlayers", "update_residual"], strict=False)
    _check_choice(form["update_style"], _join(fpath, "update_style"),
                  ("res_avg", "res_incr", "res_residual"), "update_style", ignore_case=False)
    _check_choice(form["update_residual_init"], _join(fpath, "update_residual_init"),
                  ("norm", "const"), "update_residual_init", ignore_case=False)

    # DeePMD-kit builds the neighbour lists of all blocks from one another: a block with a
    # smaller cut-off must not keep more neighbours
    if not form["rcut"] < init["rcut"]:
        raise InputError(f"expected repformer rcut < repinit rcut ({init['rcut']}), got "
                         f"{form['rcut']}", _join(fpath, "rcut"))
    if not form["nsel"] < init["nsel"]:
        raise InputError(f"expected repformer nsel < repinit nsel ({init['nsel']}), got "
                         f"{form['nsel']}", _join(fpath, "nsel"))
    if init["use_three_body"]:
        _check_cutoff(init, ipath, "three_body_rcut", "three_body_rcut_smth")
        _check_nsel(init, ipath, "three_body_sel")
        _check_widths(init, ipath, "three_body_neuron")
        rcut3, sel3 = init["three_body_rcut"], init["three_body_sel"]
        if rcut3 > init["rcut"]:
            raise InputError(f"expected three_body_rcut <= rcut ({init['rcut']}), got {rcut3}",
                             _join(ipath, "three_body_rcut"))
        if sel3 > init["nsel"]:
            raise InputError(f"expected three_body_sel <= nsel ({init['nsel']}), got {sel3}",
                             _join(ipath, "three_body_sel"))
        if (rcut3 < form["rcut"] and sel3 > form["nsel"]) or (
                rcut3 > form["rcut"] and sel3 < form["nsel"]):
            raise InputError(
                f"three_body_rcut {rcut3} and three_body_sel {sel3} are not in the same order "
                f"as repformer rcut {form['rcut']} and nsel {form['nsel']}: the block with the "
                "smaller cut-off must not keep more neighbours", _join(ipath, "three_body_sel"))


def _check_data(section: dict, path: str) -> None:
    systems = section["systems"]
    if not systems or (isinstance(systems, list) and not all(systems)):
        raise InputError("no systems given", _join(path, "systems"))
    _check_batch_size(section["batch_size"], _join(path, "batch_size"))
    style = section["auto_prob"]
    if style not in ("prob_uniform", "prob_sys_size") and not style.startswith("prob_sys_size;"):
        raise InputError(f"expected 'prob_uniform', 'prob_sys_size' or 'prob_sys_size;...', got "
                         f"{style!r}", _join(path, "auto_prob"))
    probs = section["sys_probs"]
    if probs is not None:
        if isinstance(systems, list) and len(probs) != len(systems):
            raise InputError(f"{len(probs)} probabilities for {len(systems)} systems",
                             _join(path, "sys_probs"))
        if any(p < 0 for p in probs) or sum(probs) <= 0:
            raise InputError(f"expected non-negative weights with a positive sum, got {probs}",
                             _join(path, "sys_probs"))
    _check_positive(section, path, ["numb_btch"])


def _check_semantics(data: dict) -> None:
    model = data["model"]
    type_map = model["type_map"]
    ntypes = len(type_map)
    if not type_map or not all(type_map):
        raise InputError("expected a non-empty list of element names", "model/type_map")
    if len(set(type_map)) != ntypes:
        dup = sorted({t for t in type_map if type_map.count(t) > 1})
        raise InputError(f"duplicate element names {dup}", "model/type_map")
    _check_positive(model, "model", ["data_stat_nbatch", "data_stat_protect"])
    _check_type_pairs(model["pair_exclude_types"], "model/pair_exclude_types", ntypes)
    if any(not 0 <= t < ntypes for t in model["atom_exclude_types"]):
        raise InputError(f"expected type indices in [0, {ntypes}), got "
                         f"{model['atom_exclude_types']}", "model/atom_exclude_types")

    desc, dpath = model["descriptor"], "model/descriptor"
    if desc["type"] == "dpa2":
        _check_dpa2(desc, dpath, ntypes)
    else:
        _check_net(desc, dpath)
        _check_sel(desc, dpath, ntypes)
        _check_positive(desc, dpath, ["axis_neuron", "tebd_dim", "attn", "scaling_factor",
                                      "temperature", "ln_eps"])
        _check_positive(desc, dpath, ["attn_layer", "env_protection"], strict=False)
        _check_cutoff(desc, dpath)
        _check_type_pairs(desc["exclude_types"], _join(dpath, "exclude_types"), ntypes)
        if "tebd_input_mode" in desc:
            _check_choice(desc["tebd_input_mode"], _join(dpath, "tebd_input_mode"),
                          ("concat", "strip"), "tebd_input_mode")

    fit, fpath = model["fitting_net"], "model/fitting_net"
    _check_net(fit, fpath)
    _check_positive(fit, fpath, ["numb_fparam", "numb_aparam"], strict=False)

    lr = data["learning_rate"]
    _check_positive(lr, "learning_rate", ["start_lr", "stop_lr", "decay_steps"])
    _check_choice(lr["scale_by_worker"], "learning_rate/scale_by_worker",
                  ("linear", "sqrt", "none"), "scale_by_worker")

    loss = data["loss"]
    _check_positive(loss, "loss", [k for k in loss if "_pref_" in k], strict=False)

    training = data["training"]
    _check_positive(training, "training",
                    ["numb_steps", "disp_freq", "save_freq", "max_ckpt_keep", "tensorboard_freq"])
    _check_data(training["training_data"], "training/training_data")
    if training["validation_data"] is not None:
        _check_data(training["validation_data"], "training/validation_data")


# ---- public entry points -----------------------------------------------------------------------
def normalize(config: dict, source: str | None = None) -> dict:
    """Check ``config`` (a parsed ``input.json``) and return a copy with every default filled in,
    aliases replaced by their DeePMD-kit names and ``_``-keys dropped; ``config`` is not changed.

    ``source`` (the input file name) is put in error messages. Raises :class:`InputError`.
    Normalising a normalised input gives it back unchanged.
    """
    if not isinstance(config, dict):
        raise InputError(f"expected a JSON object (dict) at the top level, got "
                         f"{_value_type(config)}", source=source)
    root = input_args()
    data = copy.deepcopy(config)
    try:
        # dargs fills a section defaulted to {} only on the next pass: repeat until stable
        for _ in range(4):
            before = copy.deepcopy(data)
            root.normalize_value(data, inplace=True, trim_pattern=TRIM_PATTERN)
            if data == before:
                break
        root.check_value(data, strict=True)
        _no_bools(root, data)
        _check_semantics(data)
    except ArgumentError as err:
        raise _with_source(_translate(err, root, data), source) from None
    except InputError as err:
        raise _with_source(err, source) from None
    return data


def _with_source(err: InputError, source: str | None) -> InputError:
    return InputError(err.message, err.path, source if source is not None else err.source)


def load_input(path: str | os.PathLike) -> dict:
    """Read a training input (JSON; YAML for ``.yaml``/``.yml``) and return it normalised.

    Raises :class:`InputError` naming the file (and the line, for a syntax error).
    """
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("input file not found", source=name) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the input file: {err}", source=name) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        config = _parse_yaml(text, name)
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            lines = text.splitlines()
            line = lines[err.lineno - 1].strip() if err.lineno <= len(lines) else ""
            shown = f"\n    {line}" if line else ""
            raise InputError(
                f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}{shown}",
                source=name) from None
    return normalize(config, source=name)


def _parse_yaml(text: str, name: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(f"{where}invalid YAML: {problem}", source=name) from None


def write_normalized(config: dict, path: str | os.PathLike) -> None:
    """Normalise ``config`` and write it to ``path`` as JSON (indent 2), atomically."""
    from ..io.neutral import atomic_write

    text = json.dumps(normalize(config), indent=2) + "\n"

    def writer(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(Path(path), writer)

