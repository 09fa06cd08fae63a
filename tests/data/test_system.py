"""Reading DeePMD-kit npy and hdf5 systems: arrays, type mapping, and clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from polypot.data.system import DataError, System, find_systems, load_system, load_systems

WATER = Path(__file__).parents[2] / ".." / "shared" / "data" / "water"
LABELS = ("energy", "force", "virial", "atom_ener")


def make_sets(nframes=(3, 2), natoms=4, seed=0) -> list[dict[str, np.ndarray]]:
    """Arrays of each set in DeePMD-kit's on-disk shapes."""
    rng = np.random.default_rng(seed)
    out = []
    for nf in nframes:
        box = np.tile((np.eye(3) * 5.0 + rng.normal(0, 0.1, (3, 3))).reshape(9), (nf, 1))
        out.append({
            "coord": rng.uniform(0, 5, (nf, natoms * 3)),
            "box": box,
            "energy": rng.normal(size=nf),
            "force": rng.normal(size=(nf, natoms * 3)),
            "virial": rng.normal(size=(nf, 9)),
            "atom_ener": rng.normal(size=(nf, natoms)),
        })
    return out


def write_npy(root: Path, sets, types, type_map=None, nopbc=False) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "type.raw").write_text("\n".join(str(t) for t in types) + "\n")
    if type_map is not None:
        (root / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if nopbc:
        (root / "nopbc").write_text("")
    for k, arrays in enumerate(sets):
        d = root / f"set.{k:03d}"
        d.mkdir()
        for name, arr in arrays.items():
            np.save(d / f"{name}.npy", arr)
    return str(root)


def write_h5(file: Path, group: str, sets, types, type_map=None, nopbc=False) -> str:
    with h5py.File(file, "a") as fh:
        g = fh.require_group(group)
        g.create_dataset("type.raw", data=np.asarray(types, dtype=np.int64))
        if type_map is not None:
            g.create_dataset("type_map.raw", data=np.array(type_map, dtype="S"))
        if nopbc:
            g.create_dataset("nopbc", data=True)
        for k, arrays in enumerate(sets):
            for name, arr in arrays.items():
                g.create_dataset(f"set.{k:03d}/{name}.npy", data=arr)
    return f"{file}#/{group.strip('/')}"


TYPES = [0, 1, 1, 0]


@pytest.fixture
def system(tmp_path):
    sets = make_sets()
    return write_npy(tmp_path / "sys", sets, TYPES, ["H", "O"]), sets


def expected(sets, natoms=4) -> dict[str, np.ndarray]:
    cat = {k: np.concatenate([s[k] for s in sets]) for k in sets[0]}
    nf = cat["coord"].shape[0]
    return {
        "coord": cat["coord"].reshape(nf, natoms, 3),
        "box": cat["box"].reshape(nf, 3, 3),
        "energy": cat["energy"],
        "force": cat["force"].reshape(nf, natoms, 3),
        "virial": cat["virial"],
        "atom_ener": cat["atom_ener"],
    }


def check_equal(sys: System, want: dict[str, np.ndarray]) -> None:
    for name, arr in want.items():
        got = getattr(sys, name)
        assert got.dtype == np.float64 and got.shape == arr.shape, name
        np.testing.assert_array_equal(got, arr, err_msg=name)


# --- reading --------------------------------------------------------------------------------


def test_npy_sets_are_concatenated(system):
    path, sets = system
    s = load_system(path)
    assert s.path == path and s.nframes == 5 and s.natoms == 4
    assert s.atype.dtype == np.int64 and s.atype.tolist() == TYPES
    assert s.type_map == ["H", "O"]
    check_equal(s, expected(sets))


def test_type_map_swaps_indices(system):
    path, _ = system
    s = load_system(path, ["O", "H"])
    assert s.atype.tolist() == [1, 0, 0, 1]
    assert s.type_map == ["O", "H"]
    # extra model elements and unused type_map.raw names are fine
    assert load_system(path, ["C", "O", "N", "H"]).atype.tolist() == [3, 1, 1, 3]


def test_unused_unknown_element_is_fine(tmp_path):
    path = write_npy(tmp_path / "s", make_sets(), TYPES, ["H", "O", "Xe"])
    assert load_system(path, ["O", "H"]).atype.tolist() == [1, 0, 0, 1]


def test_element_missing_from_model(tmp_path):
    path = write_npy(tmp_path / "s", make_sets(), [0, 2, 1, 0], ["H", "O", "N"])
    with pytest.raises(DataError) as err:
        load_system(path, ["O", "H"])
    msg = str(err.value)
    assert "'N'" in msg and "['O', 'H']" in msg and "type_map.raw" in msg and path in msg


def test_no_type_map_raw_uses_indices(tmp_path):
    path = write_npy(tmp_path / "s", make_sets(), [0, 2, 1, 0])
    s = load_system(path, ["A", "B", "C"])
    assert s.atype.tolist() == [0, 2, 1, 0] and s.type_map == ["A", "B", "C"]
    assert load_system(path).type_map is None
    with pytest.raises(DataError) as err:
        load_system(path, ["A", "B"])
    msg = str(err.value)
    assert "type.raw" in msg and path in msg and "type index 2" in msg and "['A', 'B']" in msg


def test_type_index_beyond_type_map_raw(tmp_path):
    path = write_npy(tmp_path / "s", make_sets(), [0, 3, 1, 0], ["H", "O"])
    with pytest.raises(DataError, match=r"type\.raw: type index 3 is out of range.*2 names"):
        load_system(path, ["O", "H"])


def test_bad_type_raw(tmp_path):
    path = write_npy(tmp_path / "s", make_sets(), ["0", "x", "1", "0"])
    with pytest.raises(DataError, match=r"s/type\.raw: expected one integer"):
        load_system(path)


def test_nopbc(tmp_path):
    sets = make_sets()
    for s in sets:
        del s["box"]
    s = load_system(write_npy(tmp_path / "s", sets, TYPES, nopbc=True))
    assert s.box is None and s.nframes == 5


def test_energy_column_vector_accepted(tmp_path):
    sets = make_sets()
    for s in sets:
        s["energy"] = s["energy"][:, None]
    s = load_system(write_npy(tmp_path / "s", sets, TYPES))
    assert s.energy.shape == (5,)


def test_missing_labels_are_none(tmp_path):
    sets = [{"coord": s["coord"], "box": s["box"]} for s in make_sets()]
    s = load_system(write_npy(tmp_path / "s", sets, TYPES))
    assert all(getattr(s, k) is None for k in LABELS)


# --- errors ---------------------------------------------------------------------------------


def test_missing_system_folder(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="does not exist") as err:
        load_system(missing)
    assert missing in str(err.value)
    with pytest.raises(DataError, match="does not exist") as err:
        find_systems(missing)
    assert missing in str(err.value)


def test_no_systems_found(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no systems found under") as err:
        find_systems(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_missing_type_raw(tmp_path):
    (tmp_path / "s" / "set.000").mkdir(parents=True)
    with pytest.raises(DataError, match=r"s/type\.raw does not exist"):
        load_system(str(tmp_path / "s"))


def test_no_sets(tmp_path):
    path = write_npy(tmp_path / "s", [], TYPES)
    with pytest.raises(DataError, match=r"no set\.\* folders") as err:
        load_system(path)
    assert path in str(err.value)


@pytest.mark.parametrize("name", ["coord", "box"])
def test_missing_coord_or_box(tmp_path, name):
    sets = make_sets()
    del sets[1][name]
    path = write_npy(tmp_path / "s", sets, TYPES)
    with pytest.raises(DataError, match=rf"set\.001/{name}\.npy does not exist") as err:
        load_system(path)
    assert path in str(err.value)


@pytest.mark.parametrize("name", ["energy", "force", "virial", "atom_ener", "box"])
def test_frame_count_mismatch(tmp_path, name):
    sets = make_sets()
    sets[0][name] = sets[0][name][:2]
    path = write_npy(tmp_path / "s", sets, TYPES)
    with pytest.raises(DataError) as err:
        load_system(path)
    msg = str(err.value)
    assert f"set.000/{name}.npy has 2 frames" in msg and "coord.npy" in msg and "has 3" in msg


@pytest.mark.parametrize(("name", "cols", "want"), [
    ("force", 9, "natoms*3 = 4*3 per frame = 12 columns"),
    ("coord", 9, "natoms*3 = 4*3 per frame = 12 columns"),
    ("atom_ener", 3, "natoms*1 = 4*1 per frame = 4 columns"),
    ("virial", 6, "9 per frame = 9 columns"),
    ("box", 3, "9 (3x3 cell) per frame = 9 columns"),
])
def test_wrong_columns(tmp_path, name, cols, want):
    sets = make_sets()
    sets[1][name] = sets[1][name][:, :cols]
    path = write_npy(tmp_path / "s", sets, TYPES)
    with pytest.raises(DataError) as err:
        load_system(path)
    msg = str(err.value)
    assert f"set.001/{name}.npy" in msg and want in msg


@pytest.mark.parametrize(("name", "bad"), [
    ("force", np.nan), ("energy", np.inf), ("coord", -np.inf), ("box", np.nan),
    ("virial", np.nan), ("atom_ener", np.nan),
])
def test_nan_or_inf(tmp_path, name, bad):
    sets = make_sets()
    arr = sets[1][name]
    arr.reshape(arr.shape[0], -1)[1, 0] = bad  # set.001, frame 1 (a view)
    path = write_npy(tmp_path / "s", sets, TYPES)
    with pytest.raises(DataError, match="NaN or infinite") as err:
        load_system(path)
    msg = str(err.value)
    assert f"set.001/{name}.npy" in msg and "frame 1 " in msg and path in msg


def test_label_in_some_sets_only(tmp_path):
    sets = make_sets()
    del sets[1]["force"]
    with pytest.raises(DataError, match=r"set\.001/force\.npy does not exist.*every set"):
        load_system(write_npy(tmp_path / "s", sets, TYPES))


def test_non_numeric_array(tmp_path):
    sets = make_sets()
    sets[0]["energy"] = np.array(["a", "b", "c"])
    with pytest.raises(DataError, match=r"set\.000/energy\.npy: expected a real numeric"):
        load_system(write_npy(tmp_path / "s", sets, TYPES))


# --- finding systems ------------------------------------------------------------------------


def test_find_systems(tmp_path):
    sets = make_sets((1,))
    for name in ("b/s2", "a", "b/s1", "c/deep/er"):
        write_npy(tmp_path / "root" / name, sets, TYPES)
    (tmp_path / "root" / "notes").mkdir()
    root = tmp_path / "root"
    want = [str(root / n) for n in ("a", "b/s1", "b/s2", "c/deep/er")]
    assert find_systems(root) == want
    assert find_systems(str(root / "a")) == [str(root / "a")]
    # a list is taken as given, in its order
    assert find_systems([root / "b/s2", str(root / "a")]) == [str(root / "b/s2"), str(root / "a")]
    assert [s.path for s in load_systems(str(root))] == want
    with pytest.raises(DataError, match="empty"):
        find_systems([])


# --- hdf5 -----------------------------------------------------------------------------------


def test_hdf5_equals_npy(tmp_path):
    sets_a, sets_b = make_sets((3, 2)), make_sets((2,), natoms=3, seed=1)
    npy_a = write_npy(tmp_path / "a", sets_a, TYPES, ["H", "O"])
    npy_b = write_npy(tmp_path / "b", sets_b, [1, 0, 0], ["O", "H"], nopbc=True)
    file = tmp_path / "data.h5"
    h5_a = write_h5(file, "/sys/a", sets_a, TYPES, ["H", "O"])
    h5_b = write_h5(file, "/sys/b", sets_b, [1, 0, 0], ["O", "H"], nopbc=True)
    assert h5_a == f"{file}#/sys/a"
    for npy, h5 in ((npy_a, h5_a), (npy_b, h5_b)):
        a, b = load_system(npy, ["O", "H"]), load_system(h5, ["O", "H"])
        assert b.path == h5
        np.testing.assert_array_equal(a.atype, b.atype)
        for name in ("coord", "box", *LABELS):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None), name
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=name)
    assert load_system(h5_b).box is None
    assert find_systems(str(file)) == [h5_a, h5_b]
    assert find_systems(f"{file}#/") == [h5_a, h5_b]
    assert find_systems(f"{file}#/sys/b") == [h5_b]
    assert find_systems([str(file), npy_a]) == [h5_a, h5_b, npy_a]
    assert [s.nframes for s in load_systems(file)] == [5, 2]


def test_hdf5_errors_name_the_dataset(tmp_path):
    sets = make_sets()
    del sets[1]["coord"]
    file = tmp_path / "d.h5"
    path = write_h5(file, "g", sets, TYPES)
    with pytest.raises(DataError, match=r"d\.h5#/g/set\.001/coord\.npy does not exist"):
        load_system(path)
    sets = make_sets()
    sets[0]["force"][2, 5] = np.nan
    path = write_h5(file, "h", sets, TYPES)
    with pytest.raises(DataError, match=r"d\.h5#/h/set\.000/force\.npy: NaN .* frame 2 "):
        load_system(path)
    with pytest.raises(DataError, match=r"d\.h5#/nope: no group /nope"):
        load_system(f"{file}#/nope")
    with pytest.raises(DataError, match=r"missing\.h5 does not exist"):
        load_system(f"{tmp_path / 'missing.h5'}#/g")
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(DataError, match=r"no systems found under .*empty\.h5"):
        find_systems(empty)


# --- real data ------------------------------------------------------------------------------


@pytest.mark.skipif(not WATER.is_dir(), reason=f"water data not found at {WATER}")
def test_water_data():
    start = time.perf_counter()
    systems = load_systems(WATER, ["O", "H"])
    elapsed = time.perf_counter() - start
    assert [Path(s.path).name for s in systems] == ["data_0", "data_1", "data_2", "data_3"]
    assert sum(s.nframes for s in systems) == 400
    for s in systems:
        assert s.natoms == 192 and np.bincount(s.atype).tolist() == [64, 128]
        assert s.coord.shape == (s.nframes, 192, 3) and s.force.shape == (s.nframes, 192, 3)
        assert s.box.shape == (s.nframes, 3, 3) and s.energy.shape == (s.nframes,)
        assert s.virial is None and s.atom_ener is None
    raw = np.load(WATER / "data_1" / "set.001" / "force.npy")
    np.testing.assert_array_equal(systems[1].force[80:].reshape(80, -1), raw)
    assert elapsed < 5.0, f"loading the water data took {elapsed:.2f} s"
