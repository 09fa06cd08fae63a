"""DeePMD-kit's water-example model sizes, as polypot ``model`` input sections."""

from __future__ import annotations

FITTING = {"neuron": [240, 240, 240], "resnet_dt": True}

MODELS = {
    "se_e2_a": {
        "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut": 6.0, "rcut_smth": 0.5,
                       "neuron": [25, 50, 100], "axis_neuron": 16, "type_one_side": False},
    },
    "dpa1_l0": {
        "descriptor": {"type": "se_atten", "sel": 120, "rcut": 6.0, "rcut_smth": 0.5,
                       "neuron": [25, 50, 100], "axis_neuron": 16, "attn": 128,
                       "attn_layer": 0, "tebd_dim": 8, "tebd_input_mode": "strip"},
    },
    "dpa1_l2": {
        "descriptor": {"type": "se_atten", "sel": 120, "rcut": 6.0, "rcut_smth": 0.5,
                       "neuron": [25, 50, 100], "axis_neuron": 16, "attn": 128,
                       "attn_layer": 2, "attn_dotr": True, "tebd_dim": 8},
    },
    # DeePMD-kit's examples/water/dpa2 "medium" (input_torch_medium.json)
    "dpa2_medium": {
        "descriptor": {
            "type": "dpa2",
            "repinit": {"tebd_dim": 8, "rcut": 6.0, "rcut_smth": 0.5, "nsel": 120,
                        "neuron": [25, 50, 100], "axis_neuron": 12,
                        "activation_function": "tanh", "use_three_body": True,
                        "three_body_sel": 48, "three_body_rcut": 4.0,
                        "three_body_rcut_smth": 3.5},
            "repformer": {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 48, "nlayers": 6,
                          "g1_dim": 128, "g2_dim": 32, "attn2_hidden": 32, "attn2_nhead": 4,
                          "attn1_hidden": 128, "attn1_nhead": 4, "axis_neuron": 4,
                          "update_h2": False, "update_g1_has_conv": True,
                          "update_g1_has_grrg": True, "update_g1_has_drrd": True,
                          "update_g1_has_attn": False, "update_g2_has_g1g1": False,
                          "update_g2_has_attn": True, "update_style": "res_residual",
                          "update_residual": 0.01, "update_residual_init": "norm",
                          "attn2_has_gate": True, "use_sqrt_nnei": True,
                          "g1_out_conv": True, "g1_out_mlp": True},
            "add_tebd_to_repinit_out": False,
        },
    },
}


def model_config(name: str, precision: str) -> dict:
    """Full ``model`` section for benchmark model ``name`` in ``precision``."""
    desc = dict(MODELS[name]["descriptor"], precision=precision)
    return {"type_map": ["O", "H"], "descriptor": desc,
            "fitting_net": dict(FITTING, precision=precision)}
