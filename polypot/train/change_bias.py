"""Re-fit a model's per-type energy bias on new data (DeePMD-kit's ``change-bias``).

``change`` mode (DeePMD-kit's "change-by-statistic"): fit the per-type energies to the difference
between labelled and predicted frame energies, and add them to ``out_bias``. ``set`` mode: fit
them to the labels alone and replace ``out_bias`` (the network's own output is kept).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.system import System
from .stats import energy_bias, first_batches, frame_type_counts


def predicted_energies(model: Any, params: Any, batches: list) -> np.ndarray:
    """Frame energies (nframes,) of NumPy batches, evaluated with the reference (NumPy) model."""
    from ..backend.registry import get_backend
    from ..infer.runner import ModelRunner

    runner = ModelRunner(model, params, get_backend("numpy"))
    return np.concatenate([runner.run(b.nd, forces=False)["energy"][:, 0] for b in batches])


def change_bias(model: Any, params: Any, systems: list[System], nbatch: int = 10,
                batch_size: int | str = "auto", mode: str = "change") -> tuple[Any, np.ndarray]:
    """(new params, new out_bias (ntypes,)) fitted on the first ``nbatch`` batches of each
    system; ``mode`` is "change" or "set"."""
    if mode not in ("change", "set"):
        raise ValueError(f"mode must be 'change' or 'set', got {mode!r}")
    for system in systems:
        if system.energy is None:
            raise ValueError(f"{system.path}: has no energy.npy; change-bias needs energies")
    batches = first_batches(model, systems, [batch_size] * len(systems), nbatch)
    counts = frame_type_counts(batches, len(model.type_map))
    labels = np.concatenate([b.energy for b in batches])
    old = np.asarray(params["out_bias"])
    new = np.array(old, copy=True)
    if mode == "change":
        delta = energy_bias(counts, labels - predicted_energies(model, params, batches))
        new[0, :, 0] += delta
    else:
        new[0, :, 0] = energy_bias(counts, labels)
    return dict(params, out_bias=new), new[0, :, 0]
