"""Three small water models for the model-deviation tests (seeds 0, 1, 2; .dp files)."""

from __future__ import annotations

from pathlib import Path

from polypot.io.model_file import save_model
from polypot.model import build_model

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "rcut_smth": 0.5,
                   "neuron": [4, 8, 16], "axis_neuron": 4, "type_one_side": True},
    "fitting_net": {"neuron": [16, 16], "resnet_dt": True},
}
#: DeePMD-kit's model_devi.out column header
HEADER = ("#       step         max_devi_v         min_devi_v         avg_devi_v"
          "         max_devi_f         min_devi_f         avg_devi_f             devi_e")


def make_models(folder: Path, n: int = 3, config: dict = CONFIG) -> list[Path]:
    """n small water models with seeds 0..n-1, saved as .dp files."""
    paths = []
    for seed in range(n):
        model, params = build_model(config, seed=seed)
        path = folder / f"graph.{seed:03d}.dp"
        save_model(path, model, params, model_def_script=config)
        paths.append(path)
    return paths
