"""polypot writes the same ``model`` dictionary as DeePMD-kit 3.2, and round trips losslessly.

For each supported fixture, the file is read raw (``load_neutral``), turned into a polypot model
(``load_model``) and serialized again (``model_to_dict``); the result must match DeePMD-kit's
dictionary key for key, with the same ``@class`` / ``type`` / ``@version`` everywhere and
bit-identical arrays. save -> load -> save through ``.dp`` (the fixtures) and ``.yaml`` (the same
model types made small; full size under ``-m slow``) must change nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reference_data import FIXTURE_MODELS, FIXTURES, REFERENCE_MODELS

from polypot.io.model_file import load_model, model_to_dict, save_model
from polypot.io.neutral import load_neutral
from polypot.model.build import build_model
from polypot.model.model import EnergyModel
from polypot.model.network import Params

#: keys whose values identify the kind and layout of a serialized object
TAG_KEYS = ("@class", "type", "@version")
#: keys save_neutral stamps on every file (who wrote it, when)
STAMP_KEYS = ("software", "version", "time")

#: a smaller network for the ``.yaml`` round trip (PyYAML's pure-Python emitter and parser take
#: seconds per full-size model; the full-size files are checked under ``-m slow``)
TINY = {"neuron": [2, 4, 8], "axis_neuron": 2, "attn": 4, "fitting": [4, 4, 4]}


def _is_array(x: Any) -> bool:
    """NumPy array or NumPy scalar."""
    return isinstance(x, (np.ndarray, np.generic))


def _describe(x: Any) -> str:
    """Short description of a value for failure messages."""
    if _is_array(x):
        return f"array{np.shape(x)} {np.asarray(x).dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def structural_diff(ref: Any, got: Any, path: str = "") -> list[str]:
    """Every difference between ``ref`` (expected) and ``got``, each with its key path."""
    where = path or "<root>"
    if isinstance(ref, dict) and isinstance(got, dict):
        out: list[str] = []
        for key in ref.keys() - got.keys():
            out.append(f"{path}/{key}: missing (expected {_describe(ref[key])})")
        for key in got.keys() - ref.keys():
            out.append(f"{path}/{key}: extra key (got {_describe(got[key])})")
        for key in TAG_KEYS:
            if key in ref and key in got and ref[key] != got[key]:
                out.append(f"{path}/{key}: expected {ref[key]!r}, got {got[key]!r}")
        for key in sorted(ref.keys() & got.keys()):
            if key in TAG_KEYS and ref[key] != got[key]:
                continue  # reported above
            out += structural_diff(ref[key], got[key], f"{path}/{key}")
        return sorted(out)
    if isinstance(ref, list) and isinstance(got, list):
        out = [] if len(ref) == len(got) else [
            f"{where}: list of {len(ref)} expected, got {len(got)}"
        ]
        for i, (a, b) in enumerate(zip(ref, got, strict=False)):
            out += structural_diff(a, b, f"{path}[{i}]")
        return out
    if _is_array(ref) or _is_array(got):
        if not (_is_array(ref) and _is_array(got)):
            return [f"{where}: expected {_describe(ref)}, got {_describe(got)}"]
        a, b = np.asarray(ref), np.asarray(got)
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: expected {_describe(a)}, got {_describe(b)}"]
        nan_ok = a.dtype.kind in "fc"
        if not np.array_equal(a, b, equal_nan=nan_ok):
            bad = int(np.sum(a != b)) if a.size else 0
            return [f"{where}: {bad} of {a.size} array entries differ"]
        return []
    if type(ref) is not type(got) or ref != got:
        return [f"{where}: expected {_describe(ref)}, got {_describe(got)}"]
    return []


def _assert_same(ref: Any, got: Any, what: str) -> None:
    """Fail listing every difference between ``ref`` and ``got``."""
    diff = structural_diff(ref, got)
    assert not diff, f"{what}: {len(diff)} difference(s)\n  " + "\n  ".join(diff[:50])


def _unstamped(data: dict) -> dict:
    """``data`` without the writer's stamp."""
    return {k: v for k, v in data.items() if k not in STAMP_KEYS}


@pytest.fixture(scope="module", params=FIXTURE_MODELS)
def loaded(request: pytest.FixtureRequest) -> tuple[dict, EnergyModel, Params, dict]:
    """(DeePMD-kit's raw dictionary, polypot model, params, metadata) of one fixture's model.dp."""
    path = FIXTURES / request.param / "model.dp"
    raw = load_neutral(path)
    model, params, meta = load_model(path)
    return raw, model, params, meta


def test_model_dict_matches_deepmd(loaded: tuple[dict, EnergyModel, Params, dict]) -> None:
    raw, model, params, _ = loaded
    _assert_same(raw["model"], model_to_dict(model, params)["model"], "re-serialized 'model'")


def test_fixture_carries_tags(loaded: tuple[dict, EnergyModel, Params, dict]) -> None:
    """Guard for the comparison above: the fixture really has the tags at many levels."""
    seen: dict[str, int] = dict.fromkeys(TAG_KEYS, 0)

    def count(x: Any) -> None:
        if isinstance(x, dict):
            for key in TAG_KEYS:
                seen[key] += key in x
            for v in x.values():
                count(v)
        elif isinstance(x, list):
            for v in x:
                count(v)

    count(loaded[0]["model"])
    assert seen["@class"] > 3 and seen["@version"] > 3 and seen["type"] >= 1, seen


def test_metadata_passes_through(loaded: tuple[dict, EnergyModel, Params, dict]) -> None:
    raw, _, _, meta = loaded
    assert meta["model_def_script"] == raw["model_def_script"]
    _assert_same(raw["@variables"], meta["@variables"], "'@variables'")


def _round_trip(model: EnergyModel, params: Params, meta: dict, path1: Path, path2: Path) -> None:
    """save -> load -> save: the file, the re-serialized dictionary and the second file agree."""
    mds = meta.get("model_def_script")
    mnd = meta.get("@variables", {}).get("min_nbor_dist")
    first = model_to_dict(model, params, mds, mnd)
    save_model(path1, model, params, model_def_script=mds, min_nbor_dist=mnd)
    file1 = load_neutral(path1)
    assert file1["software"] == "polypot"
    _assert_same(first, _unstamped(file1), f"{path1.name} vs model_to_dict")

    model2, params2, meta2 = load_model(path1)
    mds2 = meta2.get("model_def_script")
    mnd2 = meta2.get("@variables", {}).get("min_nbor_dist")
    _assert_same(first, model_to_dict(model2, params2, mds2, mnd2), f"reloaded {path1.name}")

    save_model(path2, model2, params2, model_def_script=mds2, min_nbor_dist=mnd2)
    file2 = load_neutral(path2)
    _assert_same(_unstamped(file1), _unstamped(file2), f"{path2.name} vs {path1.name}")
    assert file1["version"] == file2["version"]


def test_dp_round_trip(loaded: tuple[dict, EnergyModel, Params, dict], tmp_path: Path) -> None:
    _, model, params, meta = loaded
    _round_trip(model, params, meta, tmp_path / "one.dp", tmp_path / "two.dp")


def _tiny_cfg(cfg: dict) -> dict:
    """The same model input with small networks and neighbour counts."""
    cfg = copy.deepcopy(cfg)
    desc = cfg["descriptor"]
    if desc["type"] == "dpa2":
        desc["repinit"].update(neuron=TINY["neuron"], axis_neuron=TINY["axis_neuron"], nsel=8)
        desc["repformer"].update(nsel=4, g1_dim=8, g2_dim=4, attn1_hidden=4, attn2_hidden=4)
        cfg["fitting_net"]["neuron"] = TINY["fitting"]
        return cfg
    desc["neuron"], desc["axis_neuron"] = TINY["neuron"], TINY["axis_neuron"]
    desc["sel"] = [3, 5] if isinstance(desc["sel"], list) else 8
    if "attn" in desc:
        desc["attn"] = TINY["attn"]
    cfg["fitting_net"]["neuron"] = TINY["fitting"]
    return cfg


@pytest.mark.parametrize("suffix", [".yaml", ".dp"])
def test_round_trip_small_model(loaded: tuple[dict, EnergyModel, Params, dict], suffix: str,
                                tmp_path: Path) -> None:
    """Each fixture's model type, made small, round trips through ``.yaml`` (and ``.dp``)."""
    raw = loaded[0]
    cfg = _tiny_cfg(raw["model_def_script"])
    model, params = build_model(cfg, seed=7)
    meta = {"model_def_script": cfg, "@variables": raw["@variables"]}
    _round_trip(model, params, meta, tmp_path / f"one{suffix}", tmp_path / f"two{suffix}")


@pytest.mark.slow
def test_yaml_round_trip_full_size(loaded: tuple[dict, EnergyModel, Params, dict],
                                   tmp_path: Path) -> None:
    _, model, params, meta = loaded
    _round_trip(model, params, meta, tmp_path / "one.yaml", tmp_path / "two.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FIXTURE_MODELS
                                  if (FIXTURES / n / "model.yaml").exists()])
def test_deepmd_yaml_matches(name: str) -> None:
    """DeePMD-kit's own ``.yaml`` reads as its ``.dp`` does, and re-serializes identically."""
    raw_yaml = load_neutral(FIXTURES / name / "model.yaml")
    raw_dp = load_neutral(FIXTURES / name / "model.dp")
    _assert_same(raw_dp["model"], raw_yaml["model"], "model.yaml vs model.dp")
    assert raw_yaml["model_def_script"] == raw_dp["model_def_script"]
    # DeePMD-kit's YAML keeps min_nbor_dist a bare float, its .dp a 0-d dataset: same value
    assert raw_yaml["@variables"].keys() == raw_dp["@variables"].keys()
    for key, value in raw_dp["@variables"].items():
        assert float(raw_yaml["@variables"][key]) == float(value), key
    model, params, _ = load_model(FIXTURES / name / "model.yaml")
    _assert_same(raw_yaml["model"], model_to_dict(model, params)["model"], "'model' from yaml")


def test_diff_reports_paths() -> None:
    """The comparison itself names what differs and where."""
    ref = {"@class": "A", "@version": 2, "x": [{"type": "t", "w": np.zeros((2, 3))}], "k": 1}
    got = {"@class": "B", "@version": 2, "x": [{"type": "t", "w": np.zeros((3, 2))}], "e": 1}
    diff = structural_diff(ref, got)
    assert "/@class: expected 'A', got 'B'" in diff
    assert "/k: missing (expected int 1)" in diff
    assert "/e: extra key (got int 1)" in diff
    assert "/x[0]/w: expected array(2, 3) float64, got array(3, 2) float64" in diff
    assert structural_diff({"a": np.ones(2, np.float32)}, {"a": np.ones(2)}) == [
        "/a: expected array(2,) float32, got array(2,) float64"
    ]
    assert structural_diff([np.ones(2)], [np.array([1.0, 1.0 + 2**-52])]) == [
        "[0]: 1 of 2 array entries differ"
    ]


def test_deepmd_dpa2_yaml_loads(tmp_path: Path) -> None:
    """DeePMD-kit's own DPA-2 example file (an older layout: Layer @version 1, precision
    "default") reads, and the file polypot writes from it gives the same energies."""
    from polypot import DeepPot

    path = REFERENCE_MODELS / "deeppot_dpa.yaml"
    raw = load_neutral(path)["model"]["descriptor"]
    assert raw["type"] == "dpa2"
    model, params, _ = load_model(path)
    desc = model.atomic.descriptor
    assert (desc.repformer.g1_dim, desc.repformer.nlayers, desc.repinit.nsel) == (
        raw["repformer_args"]["g1_dim"], raw["repformer_args"]["nlayers"],
        raw["repinit_args"]["nsel"])
    save_model(tmp_path / "again.dp", model, params)
    rng = np.random.default_rng(0)
    coord, atype = rng.uniform(0.0, 8.0, (1, 20, 3)), rng.integers(0, 2, 20)
    cell = np.eye(3)[None] * 8.0
    e = [DeepPot(p, backend="numpy").eval_energy(coord, cell, atype)[1]
         for p in (path, tmp_path / "again.dp")]
    assert np.isfinite(e[0]).all() and np.ptp(e[0]) > 0
    np.testing.assert_array_equal(e[0], e[1])
