"""``polypot test``: dp-test style output, -n, detail files and clear errors."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from polypot.backend.registry import default_autodiff_backend
from polypot.cli import test as test_command
from polypot.data.system import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODEL = SHARED / "fixtures" / "deepmd-3.2" / "se_e2_a" / "model.dp"
WATER = SHARED / "data" / "water"

pytestmark = [
    pytest.mark.skipif(not MODEL.exists() or not (WATER / "data_0").exists(),
                       reason=f"shared fixtures not found under {SHARED}"),
    pytest.mark.skipif(default_autodiff_backend() is None,
                       reason="forces need an autodiff backend"),
]

NUMBER = r"-?\d\.\d{6}e[+-]\d\d"


def polypot_test(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="polypot")
    test_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["test", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def small_system(tmp_path_factory) -> Path:
    """Two water molecules, 3 frames, energy/force/virial labels (arbitrary numbers)."""
    rng = np.random.default_rng(1)
    base = np.array([[1.0, 1.0, 1.0], [1.96, 1.0, 1.0], [0.76, 1.93, 1.0],
                     [4.0, 4.2, 3.9], [4.96, 4.2, 3.9], [3.76, 5.13, 3.9]])
    nf = 3
    path = tmp_path_factory.mktemp("cli") / "small"
    (path / "set.000").mkdir(parents=True)
    (path / "type.raw").write_text("0 1 1 0 1 1\n")
    (path / "type_map.raw").write_text("O\nH\n")
    coord = base[None] + 0.05 * rng.standard_normal((nf, 6, 3))
    np.save(path / "set.000" / "coord.npy", coord.reshape(nf, -1))
    np.save(path / "set.000" / "box.npy", np.tile(np.diag([9.0, 9.5, 10.0]).ravel(), (nf, 1)))
    np.save(path / "set.000" / "energy.npy", -30.0 + rng.standard_normal(nf))
    np.save(path / "set.000" / "force.npy", rng.standard_normal((nf, 18)))
    np.save(path / "set.000" / "virial.npy", rng.standard_normal((nf, 9)))
    return path


def test_prints_dp_test_lines(small_system, capsys):
    assert polypot_test(["-m", str(MODEL), "-s", str(small_system), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert f"# testing system : {small_system}" in out
    assert "# number of test data : 2" in out
    for label, unit in [("Energy MAE", "eV"), ("Energy RMSE", "eV"),
                        ("Energy MAE/Natoms", "eV"), ("Energy RMSE/Natoms", "eV"),
                        ("Force  MAE", "eV/A"), ("Force  RMSE", "eV/A"),
                        ("Virial MAE", "eV"), ("Virial RMSE", "eV"),
                        ("Virial MAE/Natoms", "eV"), ("Virial RMSE/Natoms", "eV")]:
        assert re.search(rf"^{re.escape(label)} +: {NUMBER} {re.escape(unit)}$", out, re.M), label
    assert "weighted average" not in out  # one system: no average block


def test_several_systems_weighted_average_and_detail(small_system, tmp_path, capsys):
    detail = tmp_path / "d"
    argv = ["-m", str(MODEL), "-s", str(WATER / "data_0"), str(small_system), "-n", "1",
            "-d", str(detail)]
    assert polypot_test(argv) == 0
    out = capsys.readouterr().out
    assert out.count("# number of test data : 1") == 2
    avg = out[out.index("# weighted average of errors :"):]
    assert "# number of systems : 2" in avg
    assert re.search(rf"^Energy RMSE +: {NUMBER} eV$", avg, re.M)
    assert re.search(rf"^Force  RMSE +: {NUMBER} eV/A$", avg, re.M)
    assert re.search(rf"^Virial RMSE +: {NUMBER} eV$", avg, re.M)  # from the small system
    assert np.loadtxt(f"{detail}.e.out").shape == (2, 2)
    assert np.loadtxt(f"{detail}.f.out").shape == (192 + 6, 6)
    assert np.loadtxt(f"{detail}.v.out").shape == (18,)
    assert Path(f"{detail}.parity.png").read_bytes()[:4] == b"\x89PNG"


def test_errors_are_clear(small_system, tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        polypot_test(["-m", str(MODEL), "-s", str(tmp_path / "nowhere")])
    with pytest.raises(ValueError, match="unknown model file suffix"):
        polypot_test(["-m", str(tmp_path / "model.txt"), "-s", str(small_system)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        polypot_test(["-m", str(tmp_path / "model.dp"), "-s", str(small_system)])
    carbon = tmp_path / "carbon"
    carbon.mkdir()
    for item in small_system.iterdir():
        (carbon / item.name).symlink_to(item)
    (carbon / "type_map.raw").unlink()
    (carbon / "type_map.raw").write_text("C\nH\n")
    with pytest.raises(DataError, match="'C'.*not in the model's type_map"):
        polypot_test(["-m", str(MODEL), "-s", str(carbon)])
