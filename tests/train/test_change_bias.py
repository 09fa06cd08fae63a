"""change-bias on the DeePMD-kit se_e2_a fixture: labels built from the model's own energies plus
known per-element shifts, so the exact answer is known."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from reference_data import FIXTURES

from polypot.cli.main import main
from polypot.data.system import load_systems
from polypot.infer.deep_pot import DeepPot
from polypot.io.model_file import load_model, save_model
from polypot.train.change_bias import change_bias
from polypot.train.params import flatten

MODEL = FIXTURES / "se_e2_a" / "model.dp"
SHIFT = {"O": 0.5, "H": -0.25}
BOX = 10.0


def random_frames(rng: np.random.Generator, natoms: int, nf: int) -> np.ndarray:
    """nf frames of natoms positions in the box, no two atoms (periodic images included)
    closer than 1 Å."""
    frames = []
    while len(frames) < nf:
        xyz = rng.uniform(0.0, BOX, size=(natoms, 3))
        d = xyz[None] - xyz[:, None]
        d -= BOX * np.round(d / BOX)
        r = np.sqrt((d * d).sum(-1)) + np.eye(natoms) * 10.0
        if r.min() > 1.0:
            frames.append(xyz)
    return np.stack(frames)


def write_system(folder: Path, elements: list[str], type_map: list[str], nf: int, seed: int,
                 with_energy: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A deepmd/npy system whose energy labels are the fixture's energies + SHIFT per atom.
    Returns coord (nf, natoms, 3), labels (nf,) and the elements."""
    rng = np.random.default_rng(seed)
    coord = random_frames(rng, len(elements), nf)
    box = np.tile(np.eye(3).ravel() * BOX, (nf, 1))
    dp = DeepPot(MODEL, backend="numpy")
    model_types = np.array([dp.get_type_map().index(e) for e in elements])
    energy = dp.eval_energy(coord, box, model_types)[0][:, 0]
    labels = energy + sum(SHIFT[e] for e in elements)
    (folder / "set.000").mkdir(parents=True)
    (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (folder / "type.raw").write_text(" ".join(str(type_map.index(e)) for e in elements) + "\n")
    np.save(folder / "set.000" / "coord.npy", coord.reshape(nf, -1))
    np.save(folder / "set.000" / "box.npy", box)
    if with_energy:
        np.save(folder / "set.000" / "energy.npy", labels)
    return coord, labels, elements


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two systems of different composition (so the per-type fit is fully determined); the
    second lists its elements as H, O in its own type_map.raw."""
    root = tmp_path_factory.mktemp("cb")
    a = write_system(root / "a", ["O", "H", "H"] * 3, ["O", "H"], nf=3, seed=1)
    b = write_system(root / "b", ["O", "H", "O", "O", "H", "O", "H"], ["H", "O"], nf=2, seed=2)
    return root, {root / "a": a, root / "b": b}


def energies_of(model_file: Path, cases: dict) -> dict:
    dp = DeepPot(model_file, backend="numpy")
    out = {}
    for path, (coord, _, elements) in cases.items():
        box = np.tile(np.eye(3).ravel() * BOX, (coord.shape[0], 1))
        types = np.array([dp.get_type_map().index(e) for e in elements])
        out[path] = dp.eval_energy(coord, box, types)[0][:, 0]
    return out


def test_change_mode_adds_the_shift(data):
    root, cases = data
    model, params, _ = load_model(MODEL)
    systems = load_systems([str(p) for p in cases], model.type_map)
    new_params, bias = change_bias(model, params, systems, nbatch=10, batch_size=1,
                                   mode="change")
    old = np.asarray(params["out_bias"])[0, :, 0]
    shift = np.array([SHIFT[t] for t in model.type_map])
    np.testing.assert_allclose(bias - old, shift, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(new_params["out_bias"])[0, :, 0], bias)
    # nothing else changes; the input parameters are not modified
    np.testing.assert_array_equal(np.asarray(params["out_bias"])[0, :, 0], old)
    before, after = flatten(params), flatten(new_params)
    assert set(before) == set(after)
    for k in before:
        if k != "out_bias":
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_change_mode_single_composition_reproduces_labels(data, tmp_path):
    """With one composition the per-type split is not determined, but the frame energies are:
    the new model reproduces the labels of that system."""
    root, cases = data
    model, params, meta = load_model(MODEL)
    one = {root / "a": cases[root / "a"]}
    systems = load_systems([str(root / "a")], model.type_map)
    new_params, _ = change_bias(model, params, systems, nbatch=10, batch_size=2, mode="change")
    save_model(tmp_path / "new.dp", model, new_params, model_def_script=meta["model_def_script"])
    got = energies_of(tmp_path / "new.dp", one)
    np.testing.assert_allclose(got[root / "a"], cases[root / "a"][1], rtol=0, atol=1e-8)


def test_set_mode_fits_labels_alone(data):
    root, cases = data
    model, params, _ = load_model(MODEL)
    systems = load_systems([str(p) for p in cases], model.type_map)
    _, bias = change_bias(model, params, systems, nbatch=10, batch_size=1, mode="set")
    counts, labels = [], []
    for coord, lab, elements in cases.values():
        n = [elements.count(t) for t in model.type_map]
        counts += [n] * coord.shape[0]
        labels += list(lab)
    ref = np.linalg.lstsq(np.array(counts, float), np.array(labels), rcond=None)[0]
    np.testing.assert_allclose(bias, ref, rtol=1e-12)


def test_bad_mode_and_missing_energy(data, tmp_path):
    root, cases = data
    model, params, _ = load_model(MODEL)
    systems = load_systems([str(root / "a")], model.type_map)
    with pytest.raises(ValueError, match="mode"):
        change_bias(model, params, systems, mode="shift")
    write_system(tmp_path / "noe", ["O", "H", "H"], ["O", "H"], nf=1, seed=3, with_energy=False)
    with pytest.raises(ValueError, match="energy"):
        change_bias(model, params, load_systems([str(tmp_path / "noe")], model.type_map))
    # through the command line: exit code 2, one line naming the problem
    assert main(["change-bias", str(MODEL), "-s", str(tmp_path / "noe"),
                 "-o", str(tmp_path / "x.dp")]) == 2
    assert not (tmp_path / "x.dp").exists()


def test_cli_change_bias(data, tmp_path, capsys):
    root, cases = data
    src = tmp_path / "model.dp"
    shutil.copy(MODEL, src)
    out = tmp_path / "new.dp"
    assert main(["change-bias", str(src), "-s", *[str(p) for p in cases], "-b", "1",
                 "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    got = energies_of(out, cases)
    for path, (_, labels, _) in cases.items():
        np.testing.assert_allclose(got[path], labels, rtol=0, atol=1e-8, err_msg=str(path))
    # the metadata travels: same type map and model definition
    _, _, meta_old = load_model(src)
    _, params_new, meta_new = load_model(out)
    assert meta_new["model_def_script"] == meta_old["model_def_script"]
    old_bias = load_model(src)[1]["out_bias"][0, :, 0]
    np.testing.assert_allclose(params_new["out_bias"][0, :, 0] - old_bias, [0.5, -0.25],
                               rtol=0, atol=1e-8)
    # default output name: MODEL_updated.dp beside the input
    assert main(["change-bias", str(src), "-s", str(root / "a")]) == 0
    assert (tmp_path / "model_updated.dp").is_file()
