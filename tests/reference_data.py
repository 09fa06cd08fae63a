"""Reference data for tests: DeePMD-kit 3.2 fixtures and water data from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "deepmd-3.2"
REFERENCE_MODELS = SHARED / "data" / "deepmd_reference_models"
WATER = SHARED / "data" / "water"

#: fixture models polypot supports
FIXTURE_MODELS = ["se_e2_a", "se_atten_l0", "se_atten_l2", "se_atten_v2_l0", "dpa2"]
CASES = ["periodic", "shuffled", "cluster"]


def fixture_frames(name: str, case: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """coord (nf, natoms, 3), cell (nf, 3, 3) or None, atype (natoms,) of a fixture case."""
    fr = np.load(FIXTURES / name / "frames.npz")
    cell = fr[f"{case}_cell"]
    return fr[f"{case}_coord"], (None if cell.size == 0 else cell), fr[f"{case}_atype"]


def fixture_reference(name: str, case: str) -> dict[str, np.ndarray]:
    """DeePMD-kit's outputs for a fixture case (energy, force, virial, atom_energy, ...)."""
    ref = np.load(FIXTURES / name / "reference.npz")
    return {k[len(case) + 1:]: ref[k] for k in ref.files if k.startswith(case + "_")}


def max_rel(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (a relative error robust to entries near zero)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-300))


def randomise_env_stats(tree: dict, rng: np.random.Generator) -> None:
    """Replace every ``davg`` / ``dstd`` in the parameter tree ``tree`` by random values (in
    place, davg before dstd as the keys come): the fixtures' DPA-1 / DPA-2 blocks have davg = 0,
    where an empty neighbour slot's row -davg/dstd is zero and its handling goes unseen."""
    for key, value in tree.items():
        if isinstance(value, dict):
            randomise_env_stats(value, rng)
        elif key == "davg":
            tree[key] = rng.normal(0.0, 0.3, np.shape(value))
        elif key == "dstd":
            tree[key] = rng.uniform(0.5, 1.5, np.shape(value))
