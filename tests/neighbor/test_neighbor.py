"""Tests of polypot.neighbor against an independent brute-force O(N^2) oracle."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from polypot.neighbor import NeighborData, build_neighbor_data
from polypot.neighbor import extend as extend_module
from polypot.neighbor import nlist as nlist_module
from polypot.neighbor.pairs import cached_calculator, find_pairs

# ---------------------------------------------------------------- brute-force oracle


def oracle_neighbors(
    coord: np.ndarray, cell: np.ndarray | None, rcut: float
) -> list[list[tuple[int, tuple[int, int, int], float]]]:
    """Per local atom i, every (j, shift, distance) with |x_j + shift @ cell - x_i| < rcut.

    coord: (natoms, 3) Å; cell: (3, 3) rows or None. Loops over explicit integer shifts.
    """
    natoms = coord.shape[0]
    found: list[list[tuple[int, tuple[int, int, int], float]]] = [[] for _ in range(natoms)]
    if cell is None:
        shifts = [(0, 0, 0)]
    else:
        inv = np.linalg.inv(cell)
        frac = coord @ inv
        span = frac.max(axis=0) - frac.min(axis=0)
        volume = abs(np.linalg.det(cell))
        reach = []
        for k in range(3):
            face = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
            reach.append(math.ceil(rcut / face + span[k]) + 1)
        shifts = list(itertools.product(*(range(-r, r + 1) for r in reach)))
    for shift in shifts:
        offset = np.zeros(3) if cell is None else np.array(shift, dtype=float) @ cell
        for i in range(natoms):
            for j in range(natoms):
                if i == j and shift == (0, 0, 0):
                    continue
                d = float(np.linalg.norm(coord[j] + offset - coord[i]))
                if d < rcut:
                    found[i].append((j, shift, d))
    return found


def oracle_fast(
    coord: np.ndarray, cell: np.ndarray | None, rcut: float
) -> list[list[tuple[int, tuple[int, int, int], float]]]:
    """Same result as :func:`oracle_neighbors`: per atom pair, all shifts in a box.

    For the pair (i, j) only shifts n with |f_j - f_i + n_k| <= rcut / d_k can be within
    rcut (f fractional coordinates, d_k the spacing of lattice planes k), so the box
    around -(f_j - f_i) is searched exhaustively, vectorised over its shifts.
    """
    natoms = coord.shape[0]
    found: list[list[tuple[int, tuple[int, int, int], float]]] = [[] for _ in range(natoms)]
    if cell is None:
        for i in range(natoms):
            for j in range(natoms):
                d = float(np.linalg.norm(coord[j] - coord[i]))
                if i != j and d < rcut:
                    found[i].append((j, (0, 0, 0), d))
        return found
    frac = coord @ np.linalg.inv(cell)
    volume = abs(np.linalg.det(cell))
    reach = [
        rcut * np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) / volume
        for k in range(3)
    ]
    for i in range(natoms):
        for j in range(natoms):
            df = frac[j] - frac[i]
            axes = [
                np.arange(math.floor(-reach[k] - df[k]) - 1, math.ceil(reach[k] - df[k]) + 2)
                for k in range(3)
            ]
            grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            dist = np.linalg.norm(coord[j] + grid @ cell - coord[i], axis=1)
            for n, d in zip(grid[dist < rcut], dist[dist < rcut], strict=True):
                shift = (int(n[0]), int(n[1]), int(n[2]))
                if i != j or shift != (0, 0, 0):
                    found[i].append((j, shift, float(d)))
    return found


def random_cell(rng: np.random.Generator, rcut: float) -> np.ndarray:
    """Random triclinic cell (rows), some lengths shorter than rcut, random orientation."""
    lengths = rng.uniform(0.35, 2.2, size=3) * rcut
    cell = np.diag(lengths) + rng.uniform(-0.4, 0.4, size=(3, 3)) * lengths.mean()
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return cell @ q


# ---------------------------------------------------------------- checks of one result


def neighbor_entries(
    data: NeighborData, f: int, coord: np.ndarray, cell: np.ndarray | None
) -> list[list[tuple[int, tuple[int, int, int], float, int, int]]]:
    """Per local atom: (local j, integer shift, distance, slot, extended index) per entry.

    Asserts that every extended neighbour is coord[mapping] + an integer combination of
    the cell rows.
    """
    out = []
    for i in range(data.nloc):
        row = []
        for slot, e in enumerate(data.nlist[f, i]):
            if e < 0:
                continue
            m = int(data.mapping[f, e])
            diff = data.coord[f, e].astype(float) - coord[m]
            if cell is None:
                shift = (0, 0, 0)
                assert np.allclose(diff, 0.0)
            else:
                n = diff @ np.linalg.inv(cell)
                assert np.allclose(n, np.round(n), atol=1e-6), n
                shift = tuple(int(v) for v in np.round(n))
            d = float(np.linalg.norm(data.coord[f, e].astype(float) - coord[i]))
            row.append((m, shift, d, slot, int(e)))
        out.append(row)
    return out


def check_structure(data: NeighborData, coord: np.ndarray, atype: np.ndarray) -> None:
    """Local block, padding and image bookkeeping of the extended system."""
    nf, nloc = coord.shape[:2]
    assert data.nloc == nloc
    assert data.coord.shape[:2] == data.atype.shape == data.mapping.shape
    assert data.nlist.dtype == np.int64 and data.mapping.dtype == np.int64
    assert data.atype.dtype == np.int64 and data.overflow.dtype == np.int64
    assert data.overflow.shape == (nf,)
    np.testing.assert_array_equal(data.coord[:, :nloc], coord)
    np.testing.assert_array_equal(
        data.mapping[:, :nloc], np.broadcast_to(np.arange(nloc), (nf, nloc))
    )
    for f in range(nf):
        real = data.atype[f] >= 0
        assert real[:nloc].all()
        nall_f = int(real.sum())
        assert real[:nall_f].all(), "padding must come last"
        np.testing.assert_array_equal(data.atype[f, :nall_f], atype[f][data.mapping[f, :nall_f]])
        assert (data.mapping[f, nall_f:] == 0).all()
        assert (data.coord[f, nall_f:] == 0).all()
        used = data.nlist[f][data.nlist[f] >= 0]
        assert used.max(initial=-1) < nall_f
        # every image is somebody's neighbour, and is not duplicated
        assert set(range(nloc, nall_f)) <= set(used.tolist())
        keys = {
            (
                int(data.mapping[f, e]),
                tuple(np.round(data.coord[f, e] - coord[f][data.mapping[f, e]], 6)),
            )
            for e in range(nloc, nall_f)
        }
        assert len(keys) == nall_f - nloc


def sections_of(sel: int | list[int], atype_j: int) -> tuple[int, int]:
    """(first slot, size) of the section that a neighbour of type atype_j belongs to."""
    if isinstance(sel, int):
        return 0, sel
    return sum(sel[:atype_j]), sel[atype_j]


def check_against_oracle(
    data: NeighborData,
    coord: np.ndarray,
    cell: np.ndarray | None,
    atype: np.ndarray,
    rcut: float,
    sel: int | list[int],
) -> None:
    """Neighbour sets, sections and ordering agree with the brute-force oracle."""
    check_structure(data, coord, atype)
    for f in range(coord.shape[0]):
        frame_cell = None if cell is None else cell[f]
        expected = oracle_fast(coord[f], frame_cell, rcut)
        got = neighbor_entries(data, f, coord[f], frame_cell)
        for i in range(coord.shape[1]):
            want = {(j, s): d for j, s, d in expected[i]}
            have = {(j, s): d for j, s, d, _, _ in got[i]}
            assert len(have) == len(got[i]), "duplicate neighbour"
            assert set(have) == set(want), f"frame {f} atom {i}"
            for key, d in have.items():
                assert d == pytest.approx(want[key], abs=1e-9)
            # section membership and ascending order inside each section
            by_section: dict[int, list[tuple[int, float]]] = {}
            for j, _, d, slot, _ in got[i]:
                start, size = sections_of(sel, int(atype[f][j]))
                assert start <= slot < start + size
                by_section.setdefault(start, []).append((slot, d))
            for entries in by_section.values():
                entries.sort()
                slots = [s for s, _ in entries]
                assert slots == list(range(slots[0], slots[0] + len(slots))), "holes"
                dists = [d for _, d in entries]
                assert all(b >= a - 1e-9 for a, b in itertools.pairwise(dists))
        assert data.overflow[f] == 0


def needed_sel(
    coord: np.ndarray, cell: np.ndarray | None, atype: np.ndarray, rcut: float, ntypes: int
) -> list[int]:
    """Largest per-type neighbour count over all atoms and frames (oracle)."""
    need = [0] * ntypes
    for f in range(coord.shape[0]):
        found = oracle_fast(coord[f], None if cell is None else cell[f], rcut)
        for row in found:
            for t in range(ntypes):
                need[t] = max(need[t], sum(1 for j, _, _ in row if atype[f][j] == t))
    return need


# ---------------------------------------------------------------- tests


def test_oracles_agree() -> None:
    """The loop oracle and its vectorised twin give the same neighbours."""
    rng = np.random.default_rng(1)
    rcut = 2.5
    cell = random_cell(rng, rcut)
    coord = rng.uniform(-1.0, 2.0, size=(4, 3)) @ cell
    slow = oracle_neighbors(coord, cell, rcut)
    fast = oracle_fast(coord, cell, rcut)
    for a, b in zip(slow, fast, strict=True):
        assert {(j, s) for j, s, _ in a} == {(j, s) for j, s, _ in b}
        assert len(a) > 0


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("mixed", [False, True])
def test_random_triclinic_matches_oracle(seed: int, mixed: bool) -> None:
    rng = np.random.default_rng(seed)
    rcut = float(rng.uniform(2.0, 4.0))
    nf = 2
    natoms = int(rng.integers(1, 13))
    cell = np.stack([random_cell(rng, rcut) for _ in range(nf)])
    frac = rng.uniform(-1.0, 2.0, size=(nf, natoms, 3))  # many atoms outside the cell
    coord = np.einsum("fnk,fkl->fnl", frac, cell)
    atype = rng.integers(0, 2, size=(nf, natoms))
    need = needed_sel(coord, cell, atype, rcut, 2)
    sel: int | list[int] = sum(need) + 3 if mixed else [n + 2 for n in need]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = build_neighbor_data(coord, cell, atype, rcut, sel)
    nnei = sel if isinstance(sel, int) else sum(sel)
    assert data.nlist.shape == (nf, natoms, nnei)
    check_against_oracle(data, coord, cell, atype, rcut, sel)


def test_cell_much_shorter_than_rcut() -> None:
    """Tiny cell: many images of every atom, including of itself."""
    rng = np.random.default_rng(7)
    rcut = 3.0
    cell = np.array([[0.9, 0.1, 0.0], [0.3, 1.1, 0.2], [-0.2, 0.4, 1.3]])[None]
    coord = rng.uniform(-3.0, 4.0, size=(1, 3, 3)) @ cell[0]
    atype = np.array([0, 1, 1])
    need = needed_sel(coord, cell, atype[None], rcut, 2)
    assert min(need) > 20
    data = build_neighbor_data(coord, cell, atype, rcut, need)
    check_against_oracle(data, coord, cell, atype[None], rcut, need)


def test_far_unwrapped_coordinates() -> None:
    """Coordinates tens of cells away from the origin cell are handled exactly."""
    rng = np.random.default_rng(3)
    rcut = 3.0
    cell = random_cell(rng, rcut)[None]
    frac = rng.uniform(-40.0, 40.0, size=(1, 5, 3))
    coord = frac @ cell[0]
    atype = np.array([[0, 1, 0, 1, 1]])
    need = needed_sel(coord, cell, atype, rcut, 2)
    data = build_neighbor_data(coord, cell, atype, rcut, [n + 1 for n in need])
    check_against_oracle(data, coord, cell, atype, rcut, [n + 1 for n in need])


def test_single_atom_cubic_lattice_ties() -> None:
    """Exactly tied distances: all lattice points within rcut, ties by extended index."""
    a, rcut = 1.5, 4.0
    coord = np.zeros((1, 1, 3))
    cell = (a * np.eye(3))[None]
    n = 3
    expected = sum(
        1
        for s in itertools.product(range(-n, n + 1), repeat=3)
        if s != (0, 0, 0) and a * math.sqrt(sum(v * v for v in s)) < rcut
    )
    data = build_neighbor_data(coord, cell, np.array([0]), rcut, expected)
    row = data.nlist[0, 0]
    assert (row >= 0).all() and len(set(row.tolist())) == expected
    d = np.linalg.norm(data.coord[0, row], axis=1)
    assert (np.diff(d) >= 0).all()
    tied = np.diff(d) == 0
    assert tied.any()
    assert (np.diff(row)[tied] > 0).all()
    check_against_oracle(data, coord, cell, np.array([[0]]), rcut, expected)


def test_open_boundaries() -> None:
    rng = np.random.default_rng(11)
    rcut = 3.0
    coord = rng.uniform(-4.0, 4.0, size=(2, 10, 3))
    atype = rng.integers(0, 2, size=10)
    need = needed_sel(coord, None, np.broadcast_to(atype, (2, 10)), rcut, 2)
    for sel in ([n + 1 for n in need], sum(need) + 1):
        data = build_neighbor_data(coord, None, atype, rcut, sel)
        assert data.coord.shape == (2, 10, 3)
        np.testing.assert_array_equal(data.mapping, np.broadcast_to(np.arange(10), (2, 10)))
        check_against_oracle(data, coord, None, np.broadcast_to(atype, (2, 10)), rcut, sel)


def test_multi_frame_padding() -> None:
    """Frames with different cells have different image counts; padded to the max."""
    rng = np.random.default_rng(5)
    rcut = 2.5
    natoms = 4
    cells = np.stack([np.eye(3) * 20.0, np.eye(3) * 3.0, random_cell(rng, rcut)])
    coord = np.einsum("fnk,fkl->fnl", rng.uniform(0, 1, size=(3, natoms, 3)), cells)
    atype = np.array([0, 1, 1, 0])
    need = needed_sel(coord, cells, np.broadcast_to(atype, (3, natoms)), rcut, 2)
    sel = [n + 1 for n in need]
    data = build_neighbor_data(coord, cells, atype, rcut, sel)
    nall = (data.atype >= 0).sum(axis=1)
    assert data.coord.shape[1] == nall.max()
    assert nall.min() < nall.max()
    check_against_oracle(data, coord, cells, np.broadcast_to(atype, (3, natoms)), rcut, sel)


def test_float32_and_atype_per_frame() -> None:
    rng = np.random.default_rng(2)
    rcut = 3.0
    cell = np.stack([random_cell(rng, rcut)] * 2)
    coord = np.einsum("fnk,fkl->fnl", rng.uniform(0, 1, size=(2, 5, 3)), cell).astype(np.float32)
    atype = np.array([[0, 0, 1, 1, 1], [1, 1, 0, 0, 0]])
    need = needed_sel(coord.astype(np.float64), cell, atype, rcut, 2)
    data = build_neighbor_data(coord, cell, atype, rcut, need)
    assert data.coord.dtype == np.float32
    np.testing.assert_array_equal(data.coord[:, :5], coord)
    for f in range(2):
        for i in range(5):
            for t in range(2):
                start, size = sections_of(need, t)
                block = data.nlist[f, i, start : start + size]
                assert (data.atype[f, block[block >= 0]] == t).all()


def test_deterministic() -> None:
    rng = np.random.default_rng(9)
    rcut = 3.0
    cell = np.stack([random_cell(rng, rcut)])
    coord = rng.uniform(0, 1, size=(1, 6, 3)) @ cell[0]
    atype = np.array([0, 1, 0, 1, 0, 1])
    a = build_neighbor_data(coord, cell, atype, rcut, [200, 200])
    b = build_neighbor_data(coord, cell, atype, rcut, [200, 200])
    for name in ("coord", "atype", "mapping", "nlist", "overflow"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_reused_calculator_leaves_earlier_results_alone() -> None:
    """The pair search reuses one calculator per thread; a later search (another system,
    more pairs) must not change the arrays of an earlier result, nor a result that a
    different thread computes at the same time."""
    import threading

    rng = np.random.default_rng(12)
    rcut = 3.0
    cell = np.stack([random_cell(rng, rcut)])
    small = rng.uniform(0, 1, size=(1, 6, 3)) @ cell[0]
    first = find_pairs(small[0], cell[0], rcut, cached_calculator(rcut))
    kept = [np.array(a) for a in first[:4]]
    big = rng.uniform(0, 1, size=(1, 40, 3)) @ cell[0]
    big_atype = np.arange(40) % 2
    build_neighbor_data(big, cell, big_atype, rcut, [400, 400])
    assert cached_calculator(rcut) is cached_calculator(rcut)
    for now, before in zip(first[:4], kept, strict=True):
        np.testing.assert_array_equal(now, before)
    alone = build_neighbor_data(big, cell, big_atype, rcut, [400, 400])
    results: list[NeighborData] = []

    def search() -> None:
        for _ in range(10):
            results.append(build_neighbor_data(big, cell, big_atype, rcut, [400, 400]))

    threads = [threading.Thread(target=search) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    for r in results:
        np.testing.assert_array_equal(r.nlist, alone.nlist)
        np.testing.assert_array_equal(r.coord, alone.coord)


# ---------------------------------------------------------------- overflow


def overflow_setup() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(4)
    rcut = 3.0
    cell = np.stack([np.eye(3) * 4.0, np.eye(3) * 4.5])
    coord = np.einsum("fnk,fkl->fnl", rng.uniform(0, 1, size=(2, 8, 3)), cell)
    atype = np.array([[0, 0, 0, 1, 1, 1, 1, 1]] * 2)
    return coord, cell, atype, rcut


@pytest.mark.parametrize("mixed", [False, True])
def test_overflow_counts_and_keeps_closest(mixed: bool) -> None:
    coord, cell, atype, rcut = overflow_setup()
    sel: int | list[int] = 10 if mixed else [3, 5]
    ntypes = 1 if mixed else 2
    expected_drop = []
    max_found = [0] * ntypes
    for f in range(2):
        found = oracle_fast(coord[f], cell[f], rcut)
        drop = 0
        for row in found:
            for t in range(ntypes):
                cap = sel if isinstance(sel, int) else sel[t]
                n = sum(1 for j, _, _ in row if mixed or atype[f][j] == t)
                drop += max(0, n - cap)
                max_found[t] = max(max_found[t], n)
        expected_drop.append(drop)
    assert sum(expected_drop) > 0
    with pytest.warns(UserWarning) as record:
        data = build_neighbor_data(coord, cell, atype, rcut, sel)
    assert len(record) == 1, "exactly one warning per call"
    message = str(record[0].message)
    assert str(sum(expected_drop)) in message
    assert "sel" in message and "Raise" in message
    if mixed:
        assert "mixed" in message and f"sel={sel}" in message
        assert f"up to {max_found[0]} neighbours" in message
    else:
        for t in range(2):
            assert f"type {t}" in message and f"sel[{t}]={sel[t]}" in message  # type: ignore[index]
            assert f"up to {max_found[t]} neighbours" in message
    np.testing.assert_array_equal(data.overflow, expected_drop)
    check_structure(data, coord, atype)
    # the kept neighbours are the closest ones of their section (compare distances)
    for f in range(2):
        found = oracle_fast(coord[f], cell[f], rcut)
        got = neighbor_entries(data, f, coord[f], cell[f])
        for i in range(coord.shape[1]):
            for t in range(ntypes):
                cap = sel if isinstance(sel, int) else sel[t]
                want = sorted(d for j, _, d in found[i] if mixed or atype[f][j] == t)[:cap]
                have = sorted(d for j, _, d, _, _ in got[i] if mixed or atype[f][j] == t)
                np.testing.assert_allclose(have, want, atol=1e-9)


def test_no_warning_without_overflow() -> None:
    coord, cell, atype, rcut = overflow_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = build_neighbor_data(coord, cell, atype, rcut, [200, 200])
    assert (data.overflow == 0).all()


# ---------------------------------------------------------------- validation


def good_inputs() -> dict[str, object]:
    return {
        "coord": np.zeros((2, 3, 3)) + np.arange(3)[None, :, None],
        "cell": np.stack([np.eye(3) * 5.0] * 2),
        "atype": np.array([0, 1, 0]),
        "rcut": 2.0,
        "sel": [4, 4],
    }


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"coord": np.zeros((3, 3))}, r"coord must have shape \(nf, natoms, 3\)"),
        ({"coord": np.zeros((2, 3, 2))}, r"coord must have shape \(nf, natoms, 3\)"),
        ({"cell": np.eye(3)}, r"cell must have shape \(nf, 3, 3\)"),
        ({"cell": np.stack([np.eye(3)] * 3)}, r"cell must have shape \(nf, 3, 3\)"),
        ({"atype": np.array([0, 1])}, r"atype must have shape \(natoms,\)"),
        ({"atype": np.zeros((3, 3), dtype=int)}, r"atype must have shape"),
        ({"atype": np.array([0, -1, 0])}, r"atype must be non-negative"),
        ({"atype": np.array([0.0, 1.0, 0.0])}, r"atype must be an integer array"),
        ({"atype": np.array([0, 2, 0])}, r"atype contains type 2 but sel has 2 entries"),
        ({"rcut": 0.0}, r"rcut must be a positive"),
        ({"rcut": -1.0}, r"rcut must be a positive"),
        ({"rcut": float("nan")}, r"rcut must be a positive"),
        ({"sel": -1}, r"sel must be non-negative"),
        ({"sel": []}, r"sel must be an int or a non-empty list"),
        ({"sel": [4, -1]}, r"sel entries must be non-negative"),
        ({"sel": [4.0, 4.0]}, r"sel must contain only ints"),
    ],
)
def test_validation_errors(change: dict[str, object], pattern: str) -> None:
    args = good_inputs() | change
    with pytest.raises(ValueError, match=pattern):
        build_neighbor_data(**args)  # type: ignore[arg-type]


def test_nan_and_inf_coordinates() -> None:
    for bad in (np.nan, np.inf):
        args = good_inputs()
        coord = np.array(args["coord"], dtype=float)
        coord[1, 2, 0] = bad
        args["coord"] = coord
        with pytest.raises(ValueError, match="coord contains NaN or infinite values at frame 1"):
            build_neighbor_data(**args)  # type: ignore[arg-type]


def test_nan_cell() -> None:
    args = good_inputs()
    cell = np.array(args["cell"])
    cell[0, 1, 1] = np.nan
    args["cell"] = cell
    with pytest.raises(ValueError, match="cell contains NaN or infinite values at frame 0"):
        build_neighbor_data(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "flat",
    [
        np.zeros((3, 3)),
        np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]]),
        np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 1e-12]]),
    ],
)
def test_zero_volume_cell(flat: np.ndarray) -> None:
    args = good_inputs()
    cell = np.array(args["cell"])
    cell[1] = flat
    args["cell"] = cell
    with pytest.raises(ValueError, match=r"cell of frame 1 has zero volume \(det="):
        build_neighbor_data(**args)  # type: ignore[arg-type]


def test_empty_and_isolated() -> None:
    """No atoms, or atoms with no neighbour: all slots empty, nothing added."""
    data = build_neighbor_data(np.zeros((1, 0, 3)), np.eye(3)[None] * 5, np.zeros(0, int), 2.0, [3])
    assert data.nlist.shape == (1, 0, 3) and data.coord.shape == (1, 0, 3)
    coord = np.array([[[0.0, 0, 0], [5.0, 5.0, 5.0]]])
    data = build_neighbor_data(coord, np.eye(3)[None] * 10, np.array([0, 0]), 2.0, 4)
    assert (data.nlist == -1).all() and data.coord.shape == (1, 2, 3)


# ---------------------------------------------------------------- speed (O(N), vectorised)


def water_like(natoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jittered simple-cubic positions at 0.1 atoms/Å^3, 1/3 type 0 and 2/3 type 1."""
    rng = np.random.default_rng(seed)
    side = round(natoms ** (1 / 3))
    assert side**3 == natoms
    a = 0.1 ** (-1 / 3)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    coord = (grid + rng.uniform(-0.3, 0.3, size=grid.shape)) * a
    atype = (np.arange(natoms) % 3 != 0).astype(np.int64)
    return coord[None], (np.eye(3) * side * a)[None], atype


def test_water_density_fits_water_sel() -> None:
    """At water density and rcut 6, DeePMD-kit's water sel [46, 92] does not overflow."""
    coord, cell, atype = water_like(216)
    data = build_neighbor_data(coord, cell, atype, 6.0, [46, 92])
    assert (data.overflow == 0).all()


def test_absurdly_small_cell() -> None:
    args = good_inputs()
    args["cell"] = np.stack([np.eye(3) * 5.0, np.eye(3) * 0.01])
    with pytest.raises(ValueError, match=r"cell of frame 1 is too small for rcut=2.0"):
        build_neighbor_data(**args)  # type: ignore[arg-type]


def test_fallback_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lexsort and np.unique fallbacks (huge systems) give the same result."""
    rng = np.random.default_rng(21)
    rcut = 3.0
    cell = np.stack([random_cell(rng, rcut) for _ in range(2)])
    coord = np.einsum("fnk,fkl->fnl", rng.uniform(-1, 2, size=(2, 7, 3)), cell)
    atype = rng.integers(0, 2, size=(2, 7))
    for sel in ([6, 9], 13):  # small enough to overflow: truncation must agree too
        with pytest.warns(UserWarning):
            fast = build_neighbor_data(coord, cell, atype, rcut, sel)
        with monkeypatch.context() as patch:
            patch.setattr(nlist_module, "_MIN_DIST_BITS", 100)
            patch.setattr(extend_module, "_DENSE_FACTOR", -(10**9))
            with pytest.warns(UserWarning):
                slow = build_neighbor_data(coord, cell, atype, rcut, sel)
        for name in ("coord", "atype", "mapping", "nlist", "overflow"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))


def test_large_system_keeps_only_needed_images() -> None:
    """12167 atoms (speed is measured in bench/neighbor.py): no overflow, and the extended
    system holds only the images within rcut of the box, not whole periodic copies."""
    coord, cell, atype = water_like(12167)  # 23^3
    data = build_neighbor_data(coord, cell, atype, 6.0, [46, 92])
    assert (data.overflow == 0).all()
    assert data.coord.shape[1] < 3 * 12167


@pytest.mark.parametrize("ngroups", [300, 2**40])
@pytest.mark.parametrize("nearly_sorted", [False, True])
@pytest.mark.parametrize("npair", [1, 7, 5000])
def test_sort_pairs_orders_by_group_distance_tie(npair, nearly_sorted, ngroups):
    """The packed-key sort (and the stable one of Verlet steps; and np.lexsort where the group
    count leaves too few bits for the distance) equals a lexicographic sort by (group,
    distance, tie), with many exact distance ties among the pairs; the sorted groups it
    returns on request are the groups in that order."""
    from polypot.neighbor.nlist import _sort_pairs

    rng = np.random.default_rng(npair)
    group = rng.integers(0, 300, npair)
    dist = rng.choice(rng.uniform(0.0, 6.0, 40), npair)
    tie = rng.permutation(npair)
    want = np.lexsort((tie, dist, group))
    got = _sort_pairs(group, dist, tie, ngroups, 6.0, nearly_sorted)
    np.testing.assert_array_equal(got, want)
    order, groups = _sort_pairs(group, dist, tie, ngroups, 6.0, nearly_sorted, with_groups=True)
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(groups, group[want])


def test_wrap_moves_atoms_into_the_cell_and_keeps_the_images_of_the_wrapped_frame() -> None:
    """``wrap``: atoms displaced by whole cell vectors give the list of the frame inside the
    cell (same images, same neighbours), where the unwrapped frame needs more images."""
    rng = np.random.default_rng(7)
    rcut = 3.0
    cell = random_cell(rng, rcut)[None]
    inside = rng.uniform(0.0, 1.0, size=(1, 40, 3)) @ cell[0]
    atype = rng.integers(0, 2, size=(1, 40))
    moved = inside + rng.integers(-3, 4, size=(1, 40, 3)) @ cell[0]
    need = [n + 2 for n in needed_sel(inside, cell, atype, rcut, 2)]
    ref = build_neighbor_data(inside, cell, atype, rcut, need)
    got = build_neighbor_data(moved, cell, atype, rcut, need, wrap=True)
    np.testing.assert_allclose(got.coord, ref.coord, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got.nlist, ref.nlist)
    np.testing.assert_array_equal(got.mapping, ref.mapping)
    np.testing.assert_array_equal(got.atype, ref.atype)
    unwrapped = build_neighbor_data(moved, cell, atype, rcut, need)
    assert unwrapped.coord.shape[1] > got.coord.shape[1]
    # in-cell atoms are left bit for bit; open frames are never moved
    again = build_neighbor_data(inside, cell, atype, rcut, need, wrap=True)
    np.testing.assert_array_equal(again.coord, ref.coord)
    cluster = build_neighbor_data(moved, None, atype, rcut, 60, wrap=True)
    np.testing.assert_array_equal(cluster.coord[:, :40], moved)
