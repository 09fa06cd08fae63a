"""polypot.train.argcheck: DeePMD-kit v3 input checking, defaults, error messages, file I/O."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from dargs import Argument

from polypot.train.argcheck import (
    InputError,
    learning_rate_args,
    load_input,
    loss_args,
    model_args,
    normalize,
    training_args,
    write_normalized,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures" / "deepmd-3.2"
SUPPORTED = ["se_e2_a", "se_atten_l0", "se_atten_l2", "se_atten_v2_l0"]

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"{FIXTURES} not found")


def minimal(descriptor: dict | None = None) -> dict:
    """A small valid input written here, so most tests do not need the shared fixtures."""
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": descriptor or {"type": "se_e2_a", "sel": [46, 92]},
        },
        "training": {"training_data": {"systems": ["data_0"]}, "numb_steps": 10},
    }


def error(config: dict, source: str | None = "input.json") -> InputError:
    with pytest.raises(InputError) as info:
        normalize(config, source)
    return info.value


# ---- DeePMD-kit 3.2 example inputs -------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("name", SUPPORTED)
def test_fixture_inputs_normalise(name: str) -> None:
    raw = json.loads((FIXTURES / name / "input.json").read_text())
    out = normalize(raw, "input.json")
    assert out["model"]["type_map"] == ["O", "H"]
    # values from the file are kept
    assert out["training"]["numb_steps"] == 30
    assert out["learning_rate"]["decay_steps"] == 20
    assert out["model"]["fitting_net"]["neuron"] == [64, 64, 64]
    # defaults are filled
    assert out["model"]["fitting_net"]["type"] == "ener"
    assert out["model"]["fitting_net"]["activation_function"] == "tanh"
    assert out["model"]["fitting_net"]["numb_fparam"] == 0
    assert out["model"]["data_stat_nbatch"] == 10
    assert out["learning_rate"]["scale_by_worker"] == "linear"
    assert out["loss"]["start_pref_ae"] == 0.0
    assert out["training"]["disp_file"] == "lcurve.out"
    assert out["training"]["save_ckpt"] == "model.ckpt"
    assert out["training"]["max_ckpt_keep"] == 5
    assert out["training"]["validation_data"] is None
    assert out["training"]["training_data"]["auto_prob"] == "prob_sys_size"
    # relative system paths stay as written
    assert out["training"]["training_data"]["systems"] == raw["training"]["training_data"][
        "systems"]
    assert normalize(out) == out
    assert raw == json.loads((FIXTURES / name / "input.json").read_text())  # input untouched


@needs_fixtures
def test_fixture_descriptor_defaults() -> None:
    se_a = load_input(FIXTURES / "se_e2_a" / "input.json")["model"]["descriptor"]
    assert se_a["sel"] == [46, 92] and se_a["type_one_side"] is True
    assert se_a["set_davg_zero"] is False and se_a["env_protection"] == 0.0
    assert se_a["exclude_types"] == [] and se_a["trainable"] is True

    atten = load_input(FIXTURES / "se_atten_l2" / "input.json")["model"]["descriptor"]
    assert atten["type"] == "se_atten" and atten["attn_layer"] == 2
    assert atten["tebd_input_mode"] == "concat" and atten["set_davg_zero"] is True
    assert atten["scaling_factor"] == 1.0 and atten["normalize"] is True
    assert atten["smooth_type_embedding"] is False and atten["temperature"] is None

    v2 = load_input(FIXTURES / "se_atten_v2_l0" / "input.json")["model"]["descriptor"]
    assert v2["type"] == "se_atten_v2" and v2["attn_layer"] == 0
    assert "tebd_input_mode" not in v2 and "smooth_type_embedding" not in v2
    assert v2["trainable_ln"] is True and v2["use_tebd_bias"] is False


def test_deepmd_only_descriptor_refused_clearly() -> None:
    err = error(minimal({"type": "dpa3"}))
    assert err.path == "model/descriptor/type"
    assert "descriptor type 'dpa3' is not supported yet" in str(err)
    assert str(err).startswith("input.json: model/descriptor/type: ")


# ---- defaults and aliases ----------------------------------------------------------------------
def test_defaults_of_a_minimal_input() -> None:
    out = normalize(minimal())
    assert out["learning_rate"] == {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-8,
                                    "decay_steps": 5000, "scale_by_worker": "linear"}
    assert out["loss"] == {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1.0,
                           "start_pref_f": 1000.0, "limit_pref_f": 1.0, "start_pref_v": 0.0,
                           "limit_pref_v": 0.0, "start_pref_ae": 0.0, "limit_pref_ae": 0.0}
    fit = out["model"]["fitting_net"]
    assert fit["neuron"] == [120, 120, 120] and fit["resnet_dt"] is True
    assert fit["precision"] == "default" and fit["rcond"] is None and fit["atom_ener"] == []
    desc = out["model"]["descriptor"]
    assert desc["rcut"] == 6.0 and desc["rcut_smth"] == 0.5 and desc["neuron"] == [10, 20, 40]
    assert desc["axis_neuron"] == 4 and desc["resnet_dt"] is False
    data = out["training"]["training_data"]
    assert data["batch_size"] == "auto" and data["sys_probs"] is None
    tr = out["training"]
    assert tr["seed"] is None and tr["disp_freq"] == 1000 and tr["save_freq"] == 1000
    assert tr["tensorboard"] is False and tr["change_bias_after_training"] is False
    assert out["model"]["pair_exclude_types"] == [] and out["model"]["atom_exclude_types"] == []
    assert out["model"]["data_stat_protect"] == 1e-2
    assert normalize(out) == out


def test_attention_defaults() -> None:
    desc = normalize(minimal({"type": "dpa1"}))["model"]["descriptor"]
    assert desc["type"] == "se_atten"  # alias replaced
    assert desc["sel"] == "auto" and desc["neuron"] == [25, 50, 100]
    assert desc["axis_neuron"] == 16 and desc["tebd_dim"] == 8 and desc["attn"] == 128
    assert desc["attn_dotr"] is True and desc["attn_mask"] is False
    assert desc["concat_output_tebd"] is True and desc["ln_eps"] is None
    assert desc["use_econf_tebd"] is False


def test_aliases() -> None:
    config = minimal({"type": "se_a", "sel": [1, 2], "n_axis_neuron": 8})
    config["training"]["stop_batch"] = config["training"].pop("numb_steps")
    config["training"]["validation_data"] = {"systems": "val", "numb_batch": 3}
    out = normalize(config)
    assert out["model"]["descriptor"]["type"] == "se_e2_a"
    assert out["model"]["descriptor"]["axis_neuron"] == 8
    assert out["training"]["numb_steps"] == 10 and "stop_batch" not in out["training"]
    val = out["training"]["validation_data"]
    assert val["numb_btch"] == 3 and val["batch_size"] == "auto" and val["systems"] == "val"


def test_sel_and_batch_size_forms() -> None:
    for sel in ("auto", "auto:1.5"):
        assert normalize(minimal({"type": "se_e2_a", "sel": sel}))["model"]["descriptor"][
            "sel"] == sel
    for sel in (120, [60, 60], "auto"):
        normalize(minimal({"type": "se_atten", "sel": sel}))
    for batch in (1, 32, "auto", "auto:64"):
        config = minimal()
        config["training"]["training_data"]["batch_size"] = batch
        assert normalize(config)["training"]["training_data"]["batch_size"] == batch


def test_comment_keys_are_accepted_and_dropped() -> None:
    config = minimal()
    config["_comment"] = "top"
    config["model"]["_comment"] = "model"
    config["model"]["descriptor"]["_note"] = {"anything": [1, 2]}
    config["training"]["training_data"]["_comment"] = "data"
    config["loss"] = {"_comment": "loss", "start_pref_e": 1}
    out = normalize(config)
    assert out == normalize(minimal() | {"loss": {"start_pref_e": 1}})
    assert "_comment" not in json.dumps(out) and "_note" not in json.dumps(out)


def test_idempotent_and_input_not_changed() -> None:
    config = minimal({"type": "se_atten_v2", "sel": 40})
    config["_comment"] = "x"
    before = copy.deepcopy(config)
    once = normalize(config)
    assert config == before
    assert normalize(once) == once
    assert normalize(copy.deepcopy(once)) is not once


# ---- unknown keys ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, wrong, right",
    [
        ((), "trainig", "training"),
        (("model", "descriptor"), "rcutsmth", "rcut_smth"),
        (("loss",), "start_pref_ff", "start_pref_f"),
        (("training", "training_data"), "batchsize", "batch_size"),
        (("training",), "num_steps", "numb_steps"),
        (("learning_rate",), "start_Lr", "start_lr"),
    ],
)
def test_unknown_key_suggests(where: tuple[str, ...], wrong: str, right: str) -> None:
    config = minimal()
    config["loss"] = {}
    config["learning_rate"] = {}
    section = config
    for part in where:
        section = section[part]
    section[wrong] = 1
    err = error(config)
    assert err.path == "/".join([*where, wrong])
    text = str(err)
    assert text.startswith("input.json: " + err.path + ": ")
    assert f"unknown key '{wrong}'" in text
    assert f"did you mean '{right}'?" in text


def test_unknown_key_without_close_match_lists_allowed() -> None:
    config = minimal()
    config["zzz"] = 1
    text = str(error(config))
    assert "unknown key 'zzz'" in text and "allowed keys: learning_rate, loss, model, training" \
        in text


def test_key_of_another_descriptor_type() -> None:
    config = minimal()
    config["model"]["descriptor"]["attn_layer"] = 2
    err = error(config)
    assert err.path == "model/descriptor/attn_layer"
    assert "not used with type 'se_e2_a'" in str(err) and "se_atten" in str(err)


def test_missing_required_keys() -> None:
    config = minimal()
    del config["training"]["numb_steps"]
    err = error(config)
    assert err.path == "training/numb_steps" and "missing required key 'numb_steps'" in str(err)
    config = minimal()
    del config["model"]["type_map"]
    assert error(config).path == "model/type_map"
    config = minimal()
    del config["model"]["descriptor"]["type"]
    err = error(config)
    assert err.path == "model/descriptor/type" and "se_e2_a, se_atten, se_atten_v2" in str(err)
    config = minimal()
    del config["training"]["training_data"]["systems"]
    assert error(config).path == "training/training_data/systems"


def test_unknown_type_names() -> None:
    err = error(minimal({"type": "se_e2_aa"}))
    assert err.path == "model/descriptor/type" and "did you mean 'se_e2_a'?" in str(err)
    config = minimal()
    config["loss"] = {"type": "ener_spin"}
    assert "loss type 'ener_spin' is not supported yet" in str(error(config))
    config = minimal()
    config["learning_rate"] = {"type": 1}
    err = error(config)
    assert err.path == "learning_rate/type" and "got int" in str(err)


# ---- wrong types -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, value, expected, given",
    [
        (("training", "training_data", "batch_size"), 1.5, "expected int or str", "got float"),
        (("training", "training_data", "batch_size"), True, "expected int or str", "got bool"),
        (("training", "numb_steps"), "100", "expected int", "got str"),
        (("model", "descriptor", "neuron"), [10, "20"], "expected list[int]",
         "got list[int | str]"),
        (("model", "descriptor", "rcut"), "6", "expected float", "got str"),
        (("model", "descriptor", "seed"), 1.5, "expected int or null", "got float"),
        (("model", "type_map"), "O H", "expected list[str]", "got str"),
        (("loss", "start_pref_e"), None, "expected float", "got null"),
        (("model", "descriptor"), [1], "expected dict", "got list[int]"),
        (("training",), 3, "expected dict", "got int"),
    ],
)
def test_wrong_types(where: tuple[str, ...], value: object, expected: str, given: str) -> None:
    config = minimal()
    config["loss"] = {}
    section = config
    for part in where[:-1]:
        section = section[part]
    section[where[-1]] = value
    err = error(config)
    assert err.path == "/".join(where)
    assert expected in str(err) and given in str(err)


def test_ints_accepted_for_floats() -> None:
    config = minimal({"type": "se_e2_a", "sel": [4, 4], "rcut": 5, "rcut_smth": 1})
    config["loss"] = {"start_pref_e": 1, "limit_pref_f": 0}
    config["learning_rate"] = {"start_lr": 1, "stop_lr": 1}
    out = normalize(config)
    assert out["model"]["descriptor"]["rcut"] == 5 and out["loss"]["limit_pref_f"] == 0


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(InputError, match="expected a JSON object"):
        normalize([1, 2], "input.json")


# ---- semantic checks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, value, words",
    [
        (("training", "numb_steps"), 0, "must be > 0"),
        (("learning_rate", "start_lr"), 0.0, "must be > 0"),
        (("learning_rate", "stop_lr"), -1e-8, "must be > 0"),
        (("learning_rate", "decay_steps"), 0, "must be > 0"),
        (("learning_rate", "scale_by_worker"), "cube", "expected one of linear, sqrt, none"),
        (("training", "training_data", "batch_size"), 0, "must be > 0"),
        (("training", "training_data", "batch_size"), "auto:0", "'auto:N'"),
        (("training", "training_data", "batch_size"), "max:4", "'auto:N'"),
        (("training", "training_data", "systems"), [], "no systems"),
        (("model", "descriptor", "sel"), [46], "sel has 1 entries but type_map has 2"),
        (("model", "descriptor", "sel"), "auto:x", "'auto:factor'"),
        (("model", "descriptor", "rcut_smth"), 6.5, "rcut_smth < rcut"),
        (("model", "descriptor", "activation_function"), "tahn", "did you mean 'tanh'?"),
        (("model", "descriptor", "precision"), "float16", "unknown precision"),
        (("model", "descriptor", "exclude_types"), [[0, 5]], "type indices"),
        (("model", "type_map"), ["O", "O"], "duplicate element names"),
        (("loss", "start_pref_f"), -1, "must be >= 0"),
    ],
)
def test_semantic_checks(where: tuple[str, ...], value: object, words: str) -> None:
    config = minimal()
    config["loss"] = {}
    config["learning_rate"] = {}
    section = config
    for part in where[:-1]:
        section = section[part]
    section[where[-1]] = value
    err = error(config)
    assert err.path == "/".join(where)
    assert words in str(err)


def test_attention_sel_list_of_any_length() -> None:
    normalize(minimal({"type": "se_atten", "sel": [10, 20, 30]}))
    err = error(minimal({"type": "se_atten", "tebd_input_mode": "mix"}))
    assert err.path == "model/descriptor/tebd_input_mode"


def test_source_is_optional() -> None:
    config = minimal()
    config["training"]["numb_steps"] = -1
    assert str(error(config, None)) == "training/numb_steps: must be > 0, got -1"


# ---- files -------------------------------------------------------------------------------------
def test_write_normalized_round_trip(tmp_path: Path) -> None:
    config = minimal()
    config["_comment"] = "dropped"
    out = tmp_path / "sub" / "input_v2_compat.json"
    write_normalized(config, out)
    text = out.read_text()
    assert text.startswith('{\n  "model": {') and text.endswith("\n")
    loaded = json.loads(text)
    assert loaded == normalize(config)
    assert load_input(out) == loaded
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def test_load_input_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text(json.dumps(minimal()))
    yaml_text = (
        "model:\n  type_map: [O, H]\n  descriptor: {type: se_e2_a, sel: [46, 92]}\n"
        "training:\n  training_data: {systems: [data_0]}\n  numb_steps: 10\n"
    )
    (tmp_path / "in.yaml").write_text(yaml_text)
    assert load_input(tmp_path / "in.json") == load_input(str(tmp_path / "in.yaml"))


def test_load_input_broken_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "model": {\n    "type_map": ["O", "H"]\n    "descriptor": {}\n  }\n}\n')
    with pytest.raises(InputError) as info:
        load_input(path)
    text = str(info.value)
    assert str(path) in text and "line 4" in text and "invalid JSON" in text


def test_load_input_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  type_map: [O, H\ntraining: 1\n")
    with pytest.raises(InputError) as info:
        load_input(path)
    assert str(path) in str(info.value) and "line" in str(info.value)
    with pytest.raises(InputError, match="not found"):
        load_input(tmp_path / "nope.json")


def test_load_input_error_names_file(tmp_path: Path) -> None:
    config = minimal()
    config["training"]["num_steps"] = 5
    path = tmp_path / "input.json"
    path.write_text(json.dumps(config))
    with pytest.raises(InputError) as info:
        load_input(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: training/num_steps: ")


def test_schema_pieces() -> None:
    pieces = {"model": model_args(), "training": training_args(), "loss": loss_args(),
              "learning_rate": learning_rate_args()}
    for name, arg in pieces.items():
        assert isinstance(arg, Argument) and arg.name == name
    model_args().check_value(normalize(minimal())["model"], strict=True)
