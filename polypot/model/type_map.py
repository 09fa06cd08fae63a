"""Change the type map of a neutral (DeePMD-kit-serialised) model dictionary.

``change_type_map(model, new_type_map)`` returns a model whose types are ``new_type_map``: every
per-type parameter of a type the model knows is picked out and put in its new place, as
DeePMD-kit v3's ``change_type_map`` does when fine-tuning. It works on the dictionary alone (NumPy
arrays, no framework), so any backend can use the result.

What is per type (``n`` = number of types):

* model: ``type_map``, ``out_bias`` / ``out_std`` (n_out, n, dim), ``atom_exclude_types``,
  ``pair_exclude_types``, ``preset_out_bias``;
* se_e2_a: ``sel`` (n,), ``davg`` / ``dstd`` (n centre types, sum(sel) neighbour slots sectioned
  by type, 4), embedding nets by neighbour type (``type_one_side``) or by (centre, neighbour)
  pair, ``exclude_types``;
* se_atten / dpa1 / se_atten_v2: ``ntypes``, ``davg`` / ``dstd`` (n, sel, 4), the rows of the
  type-embedding net's first layer (its input is one-hot over the types), ``exclude_types``;
* dpa2: ``ntypes``, the shared type embedding as above, and ``davg`` / ``dstd`` of each block
  (repinit, three-body, repformer), ``exclude_types``;
* ener fitting: ``ntypes``, ``bias_atom_e`` (n, 1), one net per type unless ``mixed_types``,
  ``exclude_types``, ``atom_ener``.

Types absent from the model ("new" types) are supported where DeePMD-kit supports them, for
descriptors with a type embedding and a mixed-type fitting: new type-embedding rows are random,
``davg`` / ``dstd`` rows come from ``new_type_stat`` (the fine-tuning data's statistics) or are
0 / 1, and the biases are 0 (fine-tuning re-fits them). se_e2_a can only reorder its types:
dropping or adding one changes its neighbour sections and its 1 / sum(sel) normalisation, so the
energies of the model could not be kept.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np

from .errors import ModelFormatError

Index = list[int | None]  # for each new type, its index in the old type map (None: a new type)

_LINEAR = ("linear", "none")


class TypeMapError(ValueError):
    """The model's type map cannot be changed to the one asked for."""


# ---- indices -----------------------------------------------------------------------------------
def remap_index(old_map: list[str], new_map: list[str]) -> Index:
    """For each name of ``new_map``, its index in ``old_map`` (None where it is not there)."""
    if len(set(new_map)) != len(new_map):
        raise TypeMapError(f"the new type_map {new_map} names a type twice")
    where = {name: i for i, name in enumerate(old_map)}
    return [where.get(name) for name in new_map]


def new_types(old_map: list[str], new_map: list[str]) -> list[str]:
    """The names of ``new_map`` that ``old_map`` lacks, in ``new_map`` order."""
    return [name for name in new_map if name not in old_map]


def _take(arr: Any, index: Index, axis: int = 0, fill: Any = 0.0) -> Any:
    """``arr`` indexed by ``index`` along ``axis``; a None entry gives ``fill``.

    ``fill``: a scalar, or an array of ``arr``'s shape except ``len(index)`` along ``axis``
    whose slice ``i`` is used for new type ``i``. Returns None for None (absent variable).
    """
    if arr is None:
        return None
    arr = np.asarray(arr)
    moved = np.moveaxis(arr, axis, 0)
    rows = []
    for i, old in enumerate(index):
        if old is not None:
            rows.append(moved[old])
        elif np.ndim(fill) == 0:
            rows.append(np.full(moved.shape[1:], fill, dtype=arr.dtype))
        else:
            rows.append(np.moveaxis(np.asarray(fill, dtype=arr.dtype), axis, 0)[i])
    out = np.stack(rows) if rows else np.zeros((0, *moved.shape[1:]), arr.dtype)
    return np.moveaxis(out, 0, axis)


def _map_atom_types(types: list[int], index: Index) -> list[int]:
    """Atom-type list (e.g. ``atom_exclude_types``) in the new numbering; dropped types go."""
    return [index.index(t) for t in types if t in index]


def _map_pairs(pairs: list[list[int]], index: Index) -> list[list[int]]:
    """Type pairs (e.g. ``exclude_types``) in the new numbering; pairs with a dropped type go."""
    return [[index.index(a), index.index(b)] for a, b in pairs if a in index and b in index]


def _map_list(values: list[Any] | None, index: Index, fill: Any = None) -> list[Any] | None:
    """A per-type list (possibly shorter than the type map) in the new order."""
    if not values:
        return values
    return [values[i] if i is not None and i < len(values) else fill for i in index]


# ---- networks ----------------------------------------------------------------------------------
def _map_collection(coll: dict, index: Index, what: str) -> dict:
    """A ``NetworkCollection`` dict for the new types: ndim 0 shared; ndim 1 by type; ndim 2 by
    (type_0, type_1) with flat index t0 + t1 * ntypes."""
    ndim, n_old = int(coll["ndim"]), int(coll["ntypes"])
    n_new = len(index)
    out = dict(coll, ntypes=n_new)
    if ndim == 0:
        return out
    if None in index:
        raise TypeMapError(f"{what}: one network per type; new types would need new networks")
    nets = coll["networks"]
    new_nets: list[Any] = [None] * n_new**ndim
    for key in itertools.product(range(n_new), repeat=ndim):
        old_key = [index[t] for t in key]
        new_nets[sum(t * n_new**i for i, t in enumerate(key))] = nets[
            sum(int(t) * n_old**i for i, t in enumerate(old_key))]
    out["networks"] = new_nets
    return out


def _skip(n_in: int, n_out: int, resnet: bool, dtype: Any) -> np.ndarray:
    """The ResNet skip of a layer as a matrix (n_in, n_out): x -> x S ([x] or [x, x] or 0)."""
    eye = np.eye(n_in, dtype=dtype)
    if resnet and n_out == n_in:
        return eye
    if resnet and n_out == 2 * n_in:
        return np.concatenate([eye, eye], axis=1)
    return np.zeros((n_in, n_out), dtype=dtype)


def _map_first_layer(layer: dict, index: Index, rng: np.random.Generator) -> dict:
    """First layer of a one-hot-input net, rows picked for the new types.

    With one-hot input e_t the layer gives act(W_t + b) * idt + S_t (S: the ResNet skip, which
    depends on the number of types). For a linear layer the new W is chosen so every kept type's
    output is unchanged: W'_t = W_old(t) + (S_old(t) - S'_t) / idt. New types get random rows
    (uniform in [0, 1), as DeePMD-kit).
    """
    var = layer["@variables"]
    w = np.asarray(var["w"])
    n_old, n_out = w.shape
    n_new = len(index)
    resnet = bool(layer.get("resnet", False))
    s_old = _skip(n_old, n_out, resnet, w.dtype)
    s_new = _skip(n_new, n_out, resnet, w.dtype)
    fresh = rng.random((n_new, n_out)).astype(w.dtype)
    if not s_old.any() and not s_new.any():
        w_new = _take(w, index, 0, fresh)
    else:
        act = (layer.get("activation_function") or "none").lower()
        if act not in _LINEAR:
            raise TypeMapError(
                f"type embedding: its first layer has a ResNet skip (width {n_out} with "
                f"{n_old} -> {n_new} types) and activation {act!r}; only a linear layer can "
                "be remapped exactly")
        idt = var.get("idt")
        scale = np.ones(n_out, w.dtype) if idt is None else np.asarray(idt, w.dtype)
        if np.any(scale == 0):
            raise TypeMapError("type embedding: a zero timestep (idt) cannot be remapped")
        w_new = _take(w + s_old / scale, index, 0, fresh) - s_new / scale
    return dict(layer, **{"@variables": dict(var, w=w_new)})


def _map_type_embedding(te: dict, index: Index, new_map: list[str],
                        rng: np.random.Generator) -> dict:
    """``TypeEmbedNet`` dict for the new types (one-hot input: first-layer rows by type)."""
    out = dict(te, ntypes=len(index), type_map=list(new_map))
    if te.get("use_econf_tebd", False):  # input from the element names: nothing to move
        return out
    emb = dict(te["embedding"])
    layers = list(emb["layers"])
    layers[0] = _map_first_layer(layers[0], index, rng)
    emb["layers"] = layers
    emb["in_dim"] = len(index)
    out["embedding"] = emb
    return out


# ---- descriptors -------------------------------------------------------------------------------
def _reject_compressed(desc: dict) -> None:
    if desc.get("compress"):
        raise TypeMapError(f"descriptor {desc.get('type')}: a compressed model's tables cannot "
                           "change their type map; use the model before compression")


def _map_se_e2_a(desc: dict, index: Index, old_map: list[str], new_map: list[str]) -> dict:
    """se_e2_a for a reordering of its types (see the module docstring for why not more)."""
    if None in index or len(index) != len(desc["sel"]):
        dropped = [t for i, t in enumerate(old_map) if i not in index]
        added = [t for t, i in zip(new_map, index, strict=True) if i is None]
        raise TypeMapError(
            "descriptor se_e2_a can only reorder its types, not "
            + (f"add {added}" if added else f"drop {dropped}")
            + ": its neighbour list has one section per type and is normalised by sum(sel), "
            "so the model's energies would change; use a type_map with exactly the model's "
            f"types {list(old_map)} (in any order), or a descriptor with type embedding "
            "(se_atten / se_atten_v2)")
    _reject_compressed(desc)
    sel = [int(s) for s in desc["sel"]]
    starts = np.cumsum([0, *sel])
    slots = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in index])
    out = dict(desc, sel=[sel[i] for i in index], type_map=list(new_map))
    out["exclude_types"] = _map_pairs(desc.get("exclude_types") or [], index)
    out["embeddings"] = _map_collection(desc["embeddings"], index, "se_e2_a embeddings")
    var = desc["@variables"]
    out["@variables"] = dict(var, **{k: _take(np.asarray(var[k])[:, slots], index)
                                     for k in ("davg", "dstd")})
    return out


def _map_dpa1(desc: dict, index: Index, new_map: list[str], stat: dict | None,
              rng: np.random.Generator) -> dict:
    """se_atten / dpa1 / se_atten_v2: type-embedding rows and per-centre-type statistics."""
    _reject_compressed(desc)
    out = dict(desc, ntypes=len(index), type_map=list(new_map))
    out["exclude_types"] = _map_pairs(desc.get("exclude_types") or [], index)
    out["type_embedding"] = _map_type_embedding(desc["type_embedding"], index, new_map, rng)
    for key in ("embeddings", "embeddings_strip"):
        if desc.get(key) is not None:
            out[key] = _map_collection(desc[key], index, f"{desc.get('type')} {key}")
    out["@variables"] = _map_stats(desc["@variables"], index, stat)
    return out


def _map_stats(var: dict, index: Index, stat: dict | None) -> dict:
    """davg / dstd rows by centre type; new types from ``stat`` (else 0 and 1)."""
    fills = {"davg": 0.0, "dstd": 1.0}
    if stat is not None:
        fills = {k: np.asarray(stat[k]) for k in fills}
        for k, v in fills.items():
            want = (len(index), *np.shape(var[k])[1:])
            if v.shape != want:
                raise TypeMapError(f"new-type statistics {k!r} have shape {v.shape}, "
                                   f"expected {want}")
    return dict(var, **{k: _take(var[k], index, 0, fills[k]) for k in fills})


#: DPA-2's blocks with their own statistics: (key in the file, key in ``new_type_stat``)
DPA2_BLOCKS = (("repinit_variable", "repinit"), ("repinit_three_body_variable", "three_body"),
               ("repformers_variable", "repformer"))


def _map_dpa2(desc: dict, index: Index, new_map: list[str], stat: dict | None,
              rng: np.random.Generator) -> dict:
    """dpa2: the shared type embedding and every block's per-centre-type statistics
    (``stat``: {"repinit": {"davg", "dstd"}, "repformer": ..., "three_body": ...})."""
    _reject_compressed(desc)
    _reject_compressed(desc.get("repinit_variable", {}))
    out = dict(desc, ntypes=len(index), type_map=list(new_map))
    out["exclude_types"] = _map_pairs(desc.get("exclude_types") or [], index)
    out["type_embedding"] = _map_type_embedding(desc["type_embedding"], index, new_map, rng)
    for key, name in DPA2_BLOCKS:
        if desc.get(key) is None:
            continue
        block = dict(desc[key])
        block["@variables"] = _map_stats(block["@variables"], index,
                                         None if stat is None else stat[name])
        if "repformer_layers" in block:
            block["repformer_layers"] = [dict(layer, ntypes=len(index))
                                         for layer in block["repformer_layers"]]
        out[key] = block
    return out


def _map_descriptor(desc: dict, index: Index, old_map: list[str], new_map: list[str],
                    stat: dict | None, rng: np.random.Generator) -> dict:
    """The descriptor dict for ``new_map`` (dispatch on its ``type``)."""
    kind = str(desc.get("type", "")).lower()
    if kind in ("se_e2_a", "se_a"):
        return _map_se_e2_a(desc, index, old_map, new_map)
    if kind in ("dpa1", "se_atten", "se_atten_v2"):
        return _map_dpa1(desc, index, new_map, stat, rng)
    if kind == "dpa2":
        return _map_dpa2(desc, index, new_map, stat, rng)
    raise TypeMapError(f"changing the type map of descriptor {kind!r} is not supported "
                       "(supported: se_e2_a, se_atten / dpa1, se_atten_v2, dpa2)")


# ---- fitting and model -------------------------------------------------------------------------
def _map_fitting(fit: dict, index: Index, new_map: list[str]) -> dict:
    """ener fitting: per-type bias (new types 0), nets (per type unless mixed_types)."""
    out = dict(fit, ntypes=len(index), type_map=list(new_map))
    out["nets"] = _map_collection(fit["nets"], index, "fitting (not mixed_types)")
    out["exclude_types"] = _map_atom_types(fit.get("exclude_types") or [], index)
    if fit.get("atom_ener"):
        out["atom_ener"] = _map_list(fit["atom_ener"], index)
    var = fit["@variables"]
    out["@variables"] = dict(var, bias_atom_e=_take(var["bias_atom_e"], index, 0, 0.0))
    return out


def _map_preset(preset: dict | None, index: Index) -> dict | None:
    """``preset_out_bias`` ({output name: per-type list}) in the new order."""
    if not preset:
        return preset
    return {k: _map_list(v, index) for k, v in preset.items()}


def _map_model_def_script(script: dict, index: Index, new_map: list[str]) -> dict:
    """The training input's ``model`` section with the new type map (and se_e2_a ``sel``)."""
    if not isinstance(script, dict) or not script:
        return script
    out = dict(script, type_map=list(new_map))
    desc = script.get("descriptor")
    if (isinstance(desc, dict) and isinstance(desc.get("sel"), list)
            and str(desc.get("type", "")).lower() in ("se_e2_a", "se_a")
            and None not in index):
        out["descriptor"] = dict(desc, sel=[desc["sel"][i] for i in index])
    return out


def _change_model(model: dict, new_map: list[str], stat: dict | None,
                  rng: np.random.Generator) -> dict:
    """The ``Model`` dict (``type: standard``) for ``new_map``."""
    if model.get("type", "standard") != "standard":
        raise TypeMapError(f"changing the type map of a {model.get('type')!r} model is not "
                           "supported (only standard DP models)")
    old_map = model.get("type_map")
    if not old_map:
        raise ModelFormatError("model dictionary has no 'type_map'")
    index = remap_index(list(old_map), list(new_map))
    fit = model["fitting"]
    added = new_types(list(old_map), list(new_map))
    if added and not fit.get("mixed_types", False):
        kind = str(model["descriptor"].get("type", "")).lower()
        allowed = "in any order" if kind in ("se_e2_a", "se_a") else "in any order, or a subset"
        raise TypeMapError(
            f"types {added} are not in the model's type map {list(old_map)}; new types need a "
            "descriptor with type embedding and a mixed-types fitting (se_atten / se_atten_v2); "
            f"this {kind} model supports only its own types, {allowed}")
    out = dict(model, type_map=list(new_map))
    out["descriptor"] = _map_descriptor(model["descriptor"], index, list(old_map),
                                        list(new_map), stat, rng)
    out["fitting"] = _map_fitting(fit, index, list(new_map))
    out["atom_exclude_types"] = _map_atom_types(model.get("atom_exclude_types") or [], index)
    out["pair_exclude_types"] = _map_pairs(model.get("pair_exclude_types") or [], index)
    out["preset_out_bias"] = _map_preset(model.get("preset_out_bias"), index)
    var = model.get("@variables") or {}
    out["@variables"] = dict(var, out_bias=_take(var.get("out_bias"), index, 1, 0.0),
                             out_std=_take(var.get("out_std"), index, 1, 1.0))
    return out


def change_type_map(data: dict, new_type_map: list[str], *, new_type_stat: dict | None = None,
                    seed: int | None = None) -> dict:
    """A copy of a neutral model for types ``new_type_map`` (``data`` is left as it is).

    data: the ``Model`` dictionary (``@class: Model``), or a whole model file's dictionary with
    it under ``"model"`` (its ``model_def_script`` is then updated too).
    new_type_stat: for new types (type-embedding descriptors only), ``{"davg", "dstd"}`` of
    shape (len(new_type_map), nnei, 4) computed for ``new_type_map`` on the fine-tuning data;
    the rows of the new types are taken (default 0 and 1). seed: for the random type-embedding
    rows of new types. Raises :class:`TypeMapError` when the change is not possible.
    """
    new_map = [str(t) for t in new_type_map]
    rng = np.random.default_rng(seed)
    if "model" in data and data.get("@class") != "Model":
        out = copy.copy(data)
        out["model"] = _change_model(copy.deepcopy(data["model"]), new_map, new_type_stat, rng)
        old_map = list(data["model"]["type_map"])
        out["model_def_script"] = _map_model_def_script(
            copy.deepcopy(data.get("model_def_script")), remap_index(old_map, new_map), new_map)
        return out
    return _change_model(copy.deepcopy(data), new_map, new_type_stat, rng)
