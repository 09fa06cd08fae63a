"""``polypot model-devi``: npy, hdf5, extxyz, .traj, i-PI xyz and LAMMPS dump inputs give the
same rows; -f steps; one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from devi_models import CONFIG, HEADER, make_models

from polypot.backend.registry import default_autodiff_backend
from polypot.cli.main import main
from polypot.data.water_box import water_box
from polypot.infer.deep_pot import DeepPot
from polypot.infer.model_devi import deviation

pytestmark = pytest.mark.skipif(default_autodiff_backend() is None,
                                reason="forces need an autodiff backend")

SYMBOLS = np.array(CONFIG["type_map"])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Models, 3 frames (coords rounded so text formats hold them exactly) and their files."""
    root = tmp_path_factory.mktemp("model_devi_cli")
    coord, cell, atype = water_box(16, seed=5)
    rng = np.random.default_rng(11)
    coords = np.round(coord[None] + rng.normal(0, 0.05, (3, *coord.shape)), 6)
    cells = np.repeat(cell[None], 3, axis=0)
    cells[2] *= 1.01  # a cell that changes between frames
    cells = np.round(cells, 5)  # the precision of i-PI's CELL(abcABC)
    images = [Atoms(SYMBOLS[atype], positions=c, cell=b, pbc=True)
              for c, b in zip(coords, cells, strict=True)]
    write(root / "traj.extxyz", images)
    write(root / "traj.traj", images)
    system = root / "system"  # npy system with the types in the opposite order (H=0, O=1)
    (system / "set.000").mkdir(parents=True)
    (system / "type_map.raw").write_text("H\nO\n")
    (system / "type.raw").write_text(" ".join(str(1 - t) for t in atype))
    np.save(system / "set.000" / "coord.npy", coords.reshape(3, -1))
    np.save(system / "set.000" / "box.npy", cells.reshape(3, 9))
    with h5py.File(root / "data.h5", "w") as h5:  # the same system as deepmd/hdf5
        group = h5.create_group("water")
        group["type.raw"] = np.array([1 - t for t in atype])
        group["type_map.raw"] = np.array([b"H", b"O"])
        group["set.000/coord.npy"] = coords.reshape(3, -1)
        group["set.000/box.npy"] = cells.reshape(3, 9)
    return {"root": root, "models": make_models(root), "coords": coords, "cells": cells,
            "atype": atype, "system": system}


def write_ipi_xyz(path: Path, coords: np.ndarray, cells: np.ndarray, symbols: list[str]
                  ) -> None:
    """i-PI's xyz trajectory: positions in bohr (atomic units), cell in Å."""
    bohr = 1.8897261  # i-PI's bohr per Å
    with open(path, "w") as fh:
        for step, (pos, cell) in enumerate(zip(coords, cells, strict=True)):
            abc = np.diag(cell)
            fh.write(f"{len(pos)}\n# CELL(abcABC): {abc[0]:10.5f}  {abc[1]:10.5f}  {abc[2]:10.5f}"
                     f"  90.00000  90.00000  90.00000  Step: {step:10d}  Bead: 0 "
                     "positions{atomic_unit}  cell{angstrom}\n")
            for sym, xyz in zip(symbols, pos * bohr, strict=True):
                fh.write(f"{sym:>8} {xyz[0]:.10e} {xyz[1]:.10e} {xyz[2]:.10e}\n")


def write_lammps_dump(path: Path, coords: np.ndarray, cells: np.ndarray, atype: np.ndarray
                      ) -> None:
    """LAMMPS text dump with types 1, 2 (no element column), atoms listed in reverse order."""
    with open(path, "w") as fh:
        for step, (pos, cell) in enumerate(zip(coords, cells, strict=True)):
            fh.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(pos)}\n"
                     "ITEM: BOX BOUNDS pp pp pp\n")
            fh.write("".join(f"0.0 {x:.10f}\n" for x in np.diag(cell)))
            fh.write("ITEM: ATOMS id type x y z\n")
            for i in reversed(range(len(pos))):
                fh.write(f"{i + 1} {atype[i] + 1} {pos[i, 0]:.10f} {pos[i, 1]:.10f} "
                         f"{pos[i, 2]:.10f}\n")


def run_cli(work: dict, sources: list[Path], out: str, *extra: str) -> list[np.ndarray]:
    """Run the command on all sources at once; the rows (nf, 8) of each source's block."""
    path = work["root"] / out
    argv = ["model-devi", "-m", *map(str, work["models"]), "-s", *map(str, sources),
            "-o", str(path)]
    assert main([*argv, *extra]) == 0
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("# ") and line != HEADER]
    assert len(starts) == len(sources)
    out_rows = []
    for k, (i, source) in enumerate(zip(starts, sources, strict=True)):
        assert lines[i] == f"# {source}"
        assert lines[i + 1] == HEADER
        rows = lines[i + 2:starts[k + 1] if k + 1 < len(starts) else None]
        assert [len(x) for x in rows] == [12 + 7 * 19] * len(rows)
        out_rows.append(np.loadtxt(rows, ndmin=2))
    return out_rows


def test_every_input_format_agrees(work: dict) -> None:
    """npy, hdf5, extxyz, ASE .traj, i-PI xyz (bohr) and a LAMMPS dump of the same frames."""
    root, coords, cells, atype = work["root"], work["coords"], work["cells"], work["atype"]
    write_ipi_xyz(root / "ipi.xyz", coords, cells, list(SYMBOLS[atype]))
    write_lammps_dump(root / "traj.lammpstrj", coords, cells, atype)
    sources = [work["system"], Path(f"{root / 'data.h5'}#/water"), root / "traj.extxyz",
               root / "traj.traj", root / "ipi.xyz", root / "traj.lammpstrj"]
    by_npy, *others = run_cli(work, sources, "all.out", "-f", "10")
    np.testing.assert_array_equal(by_npy[:, 0], [0, 10, 20])
    assert by_npy.shape == (3, 8)
    for rows in others[:3]:  # the same coordinates bit for bit
        np.testing.assert_array_equal(rows, by_npy)
    for rows in others[3:]:  # converted units / reordered atoms: up to the last digit printed
        np.testing.assert_allclose(rows, by_npy, rtol=2e-6, atol=1e-12)
    # the numbers are the deviation of the models' own outputs (printed with 7 digits)
    outs = [DeepPot(p).eval(coords, cells, atype) for p in work["models"]]
    expected = deviation(*(np.stack([o[i] for o in outs]) for i in (1, 2, 0)))
    np.testing.assert_allclose(by_npy[:, 1:], expected, rtol=1e-6)


def test_default_frequency(work: dict) -> None:
    (rows,) = run_cli(work, [work["root"] / "traj.extxyz"], "f1.out")
    np.testing.assert_array_equal(rows[:, 0], [0, 1, 2])


def test_lammps_type_names(work: dict, capsys: pytest.CaptureFixture) -> None:
    dump = work["root"] / "types.lammpstrj"
    write_lammps_dump(dump, work["coords"][:1], work["cells"][:1], work["atype"])
    err = fails(["model-devi", "-m", *map(str, work["models"]), "-s", str(dump),
                 "-t", "O"], capsys)
    assert "LAMMPS atom type beyond the type names ['O']" in err
    err = fails(["model-devi", "-m", *map(str, work["models"]), "-s", str(dump),
                 "-t", "O", "C"], capsys)
    assert "element(s) C not in the models' type map" in err


def fails(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("polypot model-devi: error:") and err.count("\n") == 1
    return err


def test_missing_model(work: dict, capsys: pytest.CaptureFixture) -> None:
    missing = work["root"] / "graph.404.dp"
    err = fails(["model-devi", "-m", str(work["models"][0]), str(missing),
                 "-s", str(work["system"])], capsys)
    assert "graph.404.dp does not exist" in err


def test_type_maps_differ(work: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = make_models(tmp_path, 1, {**CONFIG, "type_map": ["H", "O"]})[0]
    err = fails(["model-devi", "-m", str(work["models"][0]), str(other),
                 "-s", str(work["system"])], capsys)
    assert "do not share a type map" in err


def test_unknown_element(work: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    traj = tmp_path / "co.extxyz"
    write(traj, Atoms("COH", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1, 0]], cell=[9, 9, 9],
                      pbc=True))
    err = fails(["model-devi", "-m", *map(str, work["models"]), "-s", str(traj),
                 "-o", str(tmp_path / "x.out")], capsys)
    assert "element(s) C not in the models' type map ['O', 'H']" in err
