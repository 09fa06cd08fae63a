"""Tiny training inputs on the shared water data, for the training tests."""

from __future__ import annotations

import copy

from reference_data import WATER

TINY = {
    "model": {
        "type_map": ["O", "H"],
        "descriptor": {"type": "se_e2_a", "sel": [12, 24], "rcut": 3.5, "rcut_smth": 0.5,
                       "neuron": [4, 8], "axis_neuron": 4},
        "fitting_net": {"neuron": [8, 8]},
        "data_stat_nbatch": 2,
    },
    "learning_rate": {"start_lr": 1e-2, "stop_lr": 1e-4, "decay_steps": 4},
    "loss": {"start_pref_e": 0.2, "limit_pref_e": 1.0, "start_pref_f": 100.0,
             "limit_pref_f": 1.0},
    "training": {
        "training_data": {"systems": [str(WATER / "data_0"), str(WATER / "data_1")],
                          "batch_size": 1},
        "validation_data": {"systems": [str(WATER / "data_3")], "batch_size": 1,
                            "numb_btch": 1},
        "numb_steps": 20, "seed": 7, "disp_freq": 5, "save_freq": 10, "max_ckpt_keep": 5,
    },
}

TINY_ATTENTION = copy.deepcopy(TINY)
# smooth attention: the non-smooth variant switches neighbours in and out of the softmax at
# rcut, so frames with an atom within rounding of rcut give backend-dependent losses (~1e-7)
TINY_ATTENTION["model"]["descriptor"] = {
    "type": "se_atten", "sel": 36, "rcut": 3.5, "rcut_smth": 0.5, "neuron": [4, 8],
    "axis_neuron": 4, "attn": 8, "attn_layer": 1, "tebd_dim": 4, "smooth_type_embedding": True,
}


TINY_DPA2 = copy.deepcopy(TINY)
TINY_DPA2["model"]["descriptor"] = {
    "type": "dpa2",
    "repinit": {"rcut": 3.5, "rcut_smth": 0.5, "nsel": 36, "neuron": [4, 8], "axis_neuron": 4,
                "tebd_dim": 4, "use_three_body": True, "three_body_sel": 12,
                "three_body_rcut": 2.5, "three_body_neuron": [2, 4]},
    "repformer": {"rcut": 2.5, "rcut_smth": 2.0, "nsel": 12, "nlayers": 2, "g1_dim": 8,
                  "g2_dim": 4, "attn1_hidden": 4, "attn1_nhead": 2, "attn2_hidden": 4,
                  "attn2_nhead": 2, "update_style": "res_residual", "update_residual": 0.1},
}


def tiny(attention: bool | str = False, **training) -> dict:
    """A deep copy of the tiny input (se_e2_a; ``attention`` True or "se_atten": DPA-1 with one
    attention layer; "dpa2": DPA-2 with the three-body block) with ``training`` keys replaced."""
    base = {False: TINY, True: TINY_ATTENTION, "se_e2_a": TINY, "se_atten": TINY_ATTENTION,
            "dpa2": TINY_DPA2}[attention]
    cfg = copy.deepcopy(base)
    cfg["training"].update(training)
    return cfg
