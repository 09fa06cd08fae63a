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


def tiny(attention: bool = False, **training) -> dict:
    """A deep copy of the tiny input with ``training`` keys replaced."""
    cfg = copy.deepcopy(TINY_ATTENTION if attention else TINY)
    cfg["training"].update(training)
    return cfg
