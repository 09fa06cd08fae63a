"""DeePMD-kit's water-example model sizes, as polypot ``model`` input sections."""

from __future__ import annotations

FITTING = {"neuron": [240, 240, 240], "resnet_dt": True}

MODELS = {
    "se_e2_a": {
        "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut": 6.0, "rcut_smth": 0.5,
                       "neuron": [25, 50, 100], "axis_neuron": 16, "type_one_side": True},
    },
    "dpa1_l0": {
        "descriptor": {"type": "se_atten", "sel": 120, "rcut": 6.0, "rcut_smth": 0.5,
                       "neuron": [25, 50, 100], "axis_neuron": 16, "attn": 128,
                       "attn_layer": 0, "tebd_dim": 8},
    },
    "dpa1_l2": {
        "descriptor": {"type": "se_atten", "sel": 120, "rcut": 6.0, "rcut_smth": 0.5,
                       "neuron": [25, 50, 100], "axis_neuron": 16, "attn": 128,
                       "attn_layer": 2, "attn_dotr": True, "tebd_dim": 8},
    },
}


def model_config(name: str, precision: str) -> dict:
    """Full ``model`` section for benchmark model ``name`` in ``precision``."""
    desc = dict(MODELS[name]["descriptor"], precision=precision)
    return {"type_map": ["O", "H"], "descriptor": desc,
            "fitting_net": dict(FITTING, precision=precision)}
