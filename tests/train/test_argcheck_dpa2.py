"""polypot.train.argcheck: the DeePMD-kit v3 ``dpa2`` descriptor input (defaults, errors)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from polypot.train.argcheck import InputError, load_input, normalize

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "deepmd-3.2"


def dpa2(**top: object) -> dict:
    """A minimal dpa2 input: only the required keys of each block."""
    desc = {
        "type": "dpa2",
        "repinit": {"rcut": 6.0, "rcut_smth": 0.5, "nsel": 120},
        "repformer": {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 40},
        **top,
    }
    return {
        "model": {"type_map": ["O", "H"], "descriptor": desc},
        "training": {"training_data": {"systems": ["data_0"]}, "numb_steps": 10},
    }


def error(config: dict) -> InputError:
    with pytest.raises(InputError) as info:
        normalize(config, "input.json")
    return info.value


def with_value(where: tuple[str, ...], value: object) -> dict:
    """dpa2() with model/descriptor/<where> set to value."""
    config = dpa2()
    section = config["model"]["descriptor"]
    for part in where[:-1]:
        section = section[part]
    section[where[-1]] = value
    return config


# ---- defaults ----------------------------------------------------------------------------------
def test_minimal_dpa2_gets_deepmd_defaults() -> None:
    config = dpa2()
    before = copy.deepcopy(config)
    desc = normalize(config)["model"]["descriptor"]
    assert config == before
    assert desc["type"] == "dpa2"
    # top level (DeePMD-kit 3.2 descrpt_dpa2_args)
    assert desc["concat_output_tebd"] is True and desc["precision"] == "default"
    assert desc["smooth"] is True and desc["exclude_types"] == []
    assert desc["env_protection"] == 0.0 and desc["trainable"] is True and desc["seed"] is None
    assert desc["add_tebd_to_repinit_out"] is False
    assert desc["use_econf_tebd"] is False and desc["use_tebd_bias"] is False
    # repinit (dpa2_repinit_args)
    init = desc["repinit"]
    assert init == {
        "rcut": 6.0, "rcut_smth": 0.5, "nsel": 120, "neuron": [25, 50, 100], "axis_neuron": 16,
        "tebd_dim": 8, "tebd_input_mode": "concat", "set_davg_zero": True,
        "activation_function": "tanh", "type_one_side": False, "resnet_dt": False,
        "use_three_body": False, "three_body_neuron": [2, 4, 8], "three_body_rcut": 4.0,
        "three_body_rcut_smth": 0.5, "three_body_sel": 40,
    }
    # repformer (dpa2_repformer_args)
    form = desc["repformer"]
    assert form["nlayers"] == 3 and form["g1_dim"] == 128 and form["g2_dim"] == 16
    assert form["axis_neuron"] == 4 and form["direct_dist"] is False
    assert all(form[f"update_g1_has_{k}"] for k in ("conv", "drrd", "grrg", "attn"))
    assert form["update_g2_has_g1g1"] is True and form["update_g2_has_attn"] is True
    assert form["update_h2"] is False and form["attn2_has_gate"] is False
    assert (form["attn1_hidden"], form["attn1_nhead"]) == (64, 4)
    assert (form["attn2_hidden"], form["attn2_nhead"]) == (16, 4)
    assert form["update_style"] == "res_avg" and form["update_residual"] == 0.001
    assert form["update_residual_init"] == "norm" and form["activation_function"] == "tanh"
    assert form["set_davg_zero"] is True and form["trainable_ln"] is True
    assert form["use_sqrt_nnei"] is True and form["g1_out_conv"] is True
    assert form["g1_out_mlp"] is True
    assert form["ln_eps"] is None  # DeePMD-kit's default; the descriptor then uses 1e-5
    assert len(form) == 30
    out = normalize(dpa2())
    assert normalize(out) == out


def test_dpa2_alias() -> None:
    desc = normalize(dpa2(repformer_add_type_ebd_to_seq=True))["model"]["descriptor"]
    assert desc["add_tebd_to_repinit_out"] is True
    assert "repformer_add_type_ebd_to_seq" not in desc


@pytest.mark.skipif(not (FIXTURES / "dpa2").is_dir(), reason=f"{FIXTURES} not found")
def test_dpa2_fixture_normalises() -> None:
    out = load_input(FIXTURES / "dpa2" / "input.json")
    desc = out["model"]["descriptor"]
    assert desc["precision"] == "float64" and desc["seed"] == 1
    assert desc["repinit"]["nsel"] == 80 and desc["repinit"]["neuron"] == [8, 16, 32]
    assert desc["repinit"]["tebd_input_mode"] == "concat"
    assert desc["repformer"]["update_style"] == "res_residual"
    assert desc["repformer"]["attn2_has_gate"] is True and desc["repformer"]["ln_eps"] is None
    assert normalize(out) == out


# ---- unknown keys and types --------------------------------------------------------------------
def test_misspelt_repformer_key() -> None:
    config = dpa2()
    config["model"]["descriptor"]["repformer"]["update_g1_has_atn"] = True
    err = error(config)
    assert err.path == "model/descriptor/repformer/update_g1_has_atn"
    assert str(err).startswith("input.json: model/descriptor/repformer/update_g1_has_atn: ")
    assert "unknown key 'update_g1_has_atn'" in str(err)
    assert "did you mean 'update_g1_has_attn'?" in str(err)


def test_misspelt_repinit_key_and_other_descriptor_key() -> None:
    config = dpa2()
    config["model"]["descriptor"]["repinit"]["rcut_smoth"] = 0.5
    err = error(config)
    assert err.path == "model/descriptor/repinit/rcut_smoth"
    assert "did you mean 'rcut_smth'?" in str(err)
    err = error(dpa2(sel=[46, 92]))  # se_e2_a's key, not dpa2's
    assert err.path == "model/descriptor/sel" and "not used with type 'dpa2'" in str(err)
    err = error(dpa2(type_map=["O", "H"]))  # DeePMD-kit 3.2 takes type_map under model only
    assert err.path == "model/descriptor/type_map"


def test_missing_block_keys() -> None:
    config = dpa2()
    del config["model"]["descriptor"]["repformer"]["nsel"]
    err = error(config)
    assert err.path == "model/descriptor/repformer/nsel" and "missing required key" in str(err)
    config = dpa2()
    del config["model"]["descriptor"]["repinit"]
    assert error(config).path == "model/descriptor/repinit"


@pytest.mark.parametrize(
    "where, value, expected",
    [
        (("repinit", "nsel"), 1.5, "expected int or str"),
        (("repformer", "g1_dim"), True, "expected int"),
        (("repformer", "ln_eps"), "small", "expected float or null"),
        (("repinit", "neuron"), [8, "16"], "expected list[int]"),
        (("smooth",), 1, "expected bool"),
    ],
)
def test_dpa2_wrong_types(where: tuple[str, ...], value: object, expected: str) -> None:
    err = error(with_value(where, value))
    assert err.path == "/".join(("model", "descriptor", *where))
    assert expected in str(err)


# ---- semantic checks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, value, words",
    [
        # positive cut-offs, neighbour counts and widths
        (("repinit", "rcut"), 0.0, "must be > 0"),
        (("repformer", "rcut"), -1.0, "must be > 0"),
        (("repinit", "nsel"), 0, "must be > 0"),
        (("repformer", "nsel"), -4, "must be > 0"),
        (("repinit", "neuron"), [8, 0], "positive layer widths"),
        (("repinit", "axis_neuron"), 0, "must be > 0"),
        (("repinit", "tebd_dim"), 0, "must be > 0"),
        (("repformer", "g1_dim"), 0, "must be > 0"),
        (("repformer", "g2_dim"), 0, "must be > 0"),
        (("repformer", "axis_neuron"), 0, "must be > 0"),
        (("repformer", "attn1_hidden"), 0, "must be > 0"),
        (("repformer", "attn1_nhead"), 0, "must be > 0"),
        (("repformer", "attn2_hidden"), 0, "must be > 0"),
        (("repformer", "attn2_nhead"), 0, "must be > 0"),
        (("repformer", "nlayers"), -1, "must be >= 0"),
        (("repformer", "ln_eps"), 0.0, "must be > 0"),
        (("env_protection",), -1.0, "must be >= 0"),
        # rcut_smth < rcut in each block
        (("repinit", "rcut_smth"), 6.0, "expected 0 <= rcut_smth < rcut (6.0)"),
        (("repformer", "rcut_smth"), 4.5, "expected 0 <= rcut_smth < rcut (4.0)"),
        (("repformer", "rcut_smth"), -0.5, "expected 0 <= rcut_smth < rcut"),
        # repformer inside repinit
        (("repformer", "rcut"), 6.0, "expected repformer rcut < repinit rcut (6.0)"),
        (("repformer", "nsel"), 120, "expected repformer nsel < repinit nsel (120)"),
        # choices (exact, as DeePMD-kit compares them)
        (("repformer", "update_style"), "res_average", "expected one of res_avg, res_incr, "
                                                       "res_residual"),
        (("repformer", "update_style"), "RES_AVG", "unknown update_style 'RES_AVG'"),
        (("repformer", "update_residual_init"), "normal", "expected one of norm, const"),
        (("repformer", "update_residual_init"), "Norm", "unknown update_residual_init 'Norm'"),
        (("repformer", "update_residual"), -0.1, "must be >= 0"),
        (("repinit", "tebd_input_mode"), "concatenate", "expected one of concat, strip"),
        (("repinit", "activation_function"), "tahn", "did you mean 'tanh'?"),
        (("repformer", "activation_function"), "rleu", "did you mean 'relu'?"),
        (("precision",), "float16", "unknown precision"),
        (("exclude_types",), [[0, 2]], "type indices"),
        # not supported (yet)
        (("use_econf_tebd",), True, "not supported yet"),
        (("repinit", "nsel"), "auto", "'auto' is not supported yet for dpa2; give nsel as a "
                                      "positive int"),
        (("repformer", "nsel"), "auto:1.2", "'auto:1.2' is not supported yet for dpa2"),
        (("repinit", "nsel"), "many", "expected a positive int, got 'many'"),
    ],
)
def test_dpa2_semantic_checks(where: tuple[str, ...], value: object, words: str) -> None:
    err = error(with_value(where, value))
    assert err.path == "/".join(("model", "descriptor", *where))
    assert words in str(err)


def three_body(**repinit: object) -> dict:
    return with_value(("repinit",), {"rcut": 6.0, "rcut_smth": 0.5, "nsel": 120,
                                     "use_three_body": True, **repinit})


def test_three_body_accepted() -> None:
    init = normalize(three_body())["model"]["descriptor"]["repinit"]
    assert init["use_three_body"] is True and init["three_body_sel"] == 40
    normalize(three_body(three_body_rcut=6.0, three_body_sel=120))  # equal to repinit: allowed
    # unused three-body keys are not checked without use_three_body
    normalize(with_value(("repinit", "three_body_sel"), "auto"))


@pytest.mark.parametrize(
    "repinit, key, words",
    [
        ({"three_body_rcut": 6.5}, "three_body_rcut", "expected three_body_rcut <= rcut (6.0)"),
        ({"three_body_sel": 121}, "three_body_sel", "expected three_body_sel <= nsel (120)"),
        ({"three_body_rcut": 0.0}, "three_body_rcut", "must be > 0"),
        ({"three_body_rcut_smth": 4.0}, "three_body_rcut_smth",
         "expected 0 <= three_body_rcut_smth < three_body_rcut (4.0)"),
        ({"three_body_sel": 0}, "three_body_sel", "must be > 0"),
        ({"three_body_sel": "auto"}, "three_body_sel", "not supported yet for dpa2"),
        ({"three_body_neuron": []}, "three_body_neuron", "positive layer widths"),
        # smaller cut-off than repformer (4.0) but more neighbours than its nsel (40)
        ({"three_body_rcut": 3.0, "three_body_sel": 60}, "three_body_sel", "same order"),
        # larger cut-off than repformer but fewer neighbours
        ({"three_body_rcut": 5.0, "three_body_sel": 20}, "three_body_sel", "same order"),
    ],
)
def test_three_body_checks(repinit: dict, key: str, words: str) -> None:
    err = error(three_body(**repinit))
    assert err.path == f"model/descriptor/repinit/{key}"
    assert words in str(err)


def test_dpa2_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(with_value(("repformer", "nsel"), 200)))
    with pytest.raises(InputError) as info:
        load_input(path)
    assert str(info.value).startswith(f"{path}: model/descriptor/repformer/nsel: ")
