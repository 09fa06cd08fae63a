"""``polypot neighbor-stat``: exact values on hand-made systems, brute force on water frames."""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from polypot.cli import neighbor_stat as cmd
from polypot.cli.neighbor_stat import neighbor_stat
from polypot.data.system import DataError, System, load_system

WATER = Path(__file__).parents[2] / ".." / "shared" / "data" / "water"


def write_system(root: Path, coord, types, box=None, type_map=None) -> str:
    """One-set npy system; ``box`` None writes a ``nopbc`` marker."""
    coord = np.asarray(coord, dtype=np.float64).reshape(1, -1)
    (root / "set.000").mkdir(parents=True)
    (root / "type.raw").write_text(" ".join(map(str, types)))
    if type_map:
        (root / "type_map.raw").write_text("\n".join(type_map))
    np.save(root / "set.000" / "coord.npy", coord)
    if box is None:
        (root / "nopbc").write_text("")
    else:
        np.save(root / "set.000" / "box.npy", np.asarray(box, dtype=np.float64).reshape(1, 9))
    return str(root)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="polypot")
    cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


# A, B (type H) and C, D (type O) without periodicity. Within rcut 3: AB 1, AC 2, BC sqrt(5);
# AD 3.5, BD 3.64, CD 4.03 are beyond. A, B: one H and one O neighbour each; C: two H.
CLUSTER = [[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3.5]]


def test_cluster_exact(tmp_path, capsys):
    path = write_system(tmp_path / "c", CLUSTER, [0, 0, 1, 1], type_map=["H", "O"])
    assert neighbor_stat(path, 3.0) == (1.0, [2, 1])
    assert neighbor_stat(path, 3.0, ["O", "H"]) == (1.0, [1, 2])
    assert neighbor_stat(path, 3.0, ["C", "H", "N", "O"]) == (1.0, [0, 2, 0, 1])
    assert neighbor_stat(path, 0.5) == (float("inf"), [0, 0])
    assert neighbor_stat(path, 3.6)[1] == [2, 2]  # A gets D (3.5)
    assert cli(["neighbor-stat", "-s", path, "-r", "3", "-t", "O", "H"]) == 0
    assert capsys.readouterr().out.splitlines() == ["min_nbor_dist: 1.000000",
                                                    "max_nbor_size: [1, 2]"]


def test_periodic_images_exact(tmp_path):
    # CsCl: type 0 at the corner, type 1 at the centre of a 3 Å cube. Within 3.2 Å each atom
    # has 8 of the other type at 1.5 sqrt(3) and 6 images of its own type at 3.
    path = write_system(tmp_path / "cscl", [[0, 0, 0], [1.5, 1.5, 1.5]], [0, 1],
                        box=np.eye(3) * 3.0)
    dist, counts = neighbor_stat(path, 3.2)
    assert dist == pytest.approx(1.5 * np.sqrt(3), abs=1e-12) and counts == [8, 8]
    # one atom in a 1 Å cube (thinner than rcut): 6 images at 1, 12 at sqrt(2)
    path = write_system(tmp_path / "sc", [[0.2, 0.3, 0.1]], [0], box=np.eye(3))
    assert neighbor_stat(path, 1.5) == (pytest.approx(1.0, abs=1e-12), [18])
    # unwrapped coordinates give the same
    path = write_system(tmp_path / "sc2", [[5.2, -7.7, 3.1]], [0], box=np.eye(3))
    assert neighbor_stat(path, 1.5) == (pytest.approx(1.0, abs=1e-12), [18])


def test_systems_list_and_loaded_systems(tmp_path):
    a = write_system(tmp_path / "d" / "a", CLUSTER, [0, 0, 1, 1], type_map=["H", "O"])
    b = write_system(tmp_path / "d" / "b", [[0, 0, 0], [0.8, 0, 0]], [0, 1], type_map=["O", "N"])
    # own type maps are merged in order of appearance: H, O, N
    assert neighbor_stat(str(tmp_path / "d"), 3.0) == (0.8, [2, 1, 1])
    assert neighbor_stat([a, b], 3.0, ["N", "O", "H"]) == (0.8, [1, 1, 2])
    loaded = [load_system(p, ["N", "O", "H"]) for p in (a, b)]
    assert neighbor_stat(loaded, 3.0, ["N", "O", "H"]) == (0.8, [1, 1, 2])
    assert neighbor_stat([load_system(a), load_system(b)], 3.0) == (0.8, [2, 1, 1])


def test_errors(tmp_path):
    path = write_system(tmp_path / "c", CLUSTER, [0, 0, 1, 1], type_map=["H", "O"])
    with pytest.raises(DataError, match=r"element 'O' .* not in the model's type_map \['H'\]"):
        neighbor_stat(path, 3.0, ["H"])
    with pytest.raises(DataError, match="no systems found under"):
        neighbor_stat(str(tmp_path / "c" / "set.000"), 3.0)
    with pytest.raises(DataError, match="rcut"):
        neighbor_stat(path, -1.0)
    bare = write_system(tmp_path / "bare", CLUSTER, [0, 0, 1, 1])
    with pytest.raises(DataError, match="bare has no type_map.raw"):
        neighbor_stat([path, bare], 3.0)
    assert neighbor_stat(bare, 3.0) == (1.0, [2, 1])


def brute_force(s: System, rcut: float) -> tuple[float, list[int]]:
    ntypes = int(s.atype.max()) + 1
    shifts = np.array(list(itertools.product([-1, 0, 1], repeat=3)), dtype=np.float64)
    best, counts = np.inf, np.zeros(ntypes, dtype=np.int64)
    for x, cell in zip(s.coord, s.box, strict=True):
        d = x[None, :, :] - x[:, None, :]  # (i, j, 3)
        frac = d @ np.linalg.inv(cell)
        d = (frac - np.round(frac)) @ cell  # minimum image, then the 27 neighbouring cells
        d = d[None] + (shifts @ cell)[:, None, None, :]
        r = np.linalg.norm(d, axis=-1)  # (27, i, j)
        r[13][np.diag_indices(s.natoms)] = np.inf  # shift (0, 0, 0): no self pair
        best = min(best, float(r.min()))
        inside = r < rcut
        for t in range(ntypes):
            n = inside[:, :, s.atype == t].sum(axis=(0, 2))
            counts[t] = max(counts[t], int(n.max()))
    return best, counts.tolist()


@pytest.mark.skipif(not WATER.is_dir(), reason=f"water data not found at {WATER}")
def test_water_matches_brute_force(capsys):
    full = load_system(WATER / "data_1", ["O", "H"])
    frames = [0, 1, 150]
    s = System(full.path, full.atype, full.coord[frames], full.box[frames], type_map=["O", "H"])
    assert max(np.linalg.norm(s.box, axis=2).ravel()) > 12.0  # one image each way is enough
    dist, counts = neighbor_stat([s], 6.0)
    ref_dist, ref_counts = brute_force(s, 6.0)
    assert dist == pytest.approx(ref_dist, rel=1e-12)
    assert counts == ref_counts
    start = time.perf_counter()
    assert cli(["neighbor-stat", "-s", str(WATER), "-r", "6"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("min_nbor_dist: 0.8") and out[1].startswith("max_nbor_size: [")
    assert elapsed < 10.0, f"neighbor-stat on the water data took {elapsed:.1f} s"
