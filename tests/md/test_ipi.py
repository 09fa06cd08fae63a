"""``polypot ipi``: a real i-PI server drives NVE water with polypot as its force client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from reference_data import FIXTURES

from polypot.cli.main import main
from polypot.data.water_box import water_box
from polypot.md.ipi import IPIConfigError, check_config, load_config

pytest.importorskip("ipi")

MODEL = FIXTURES / "se_e2_a" / "model.dp"  # water, type_map [O, H], rcut 6 Å
NSTEPS = 20
I_PI = Path(sys.executable).with_name("i-pi")

IPI_INPUT = """<simulation verbosity='low' floatformat='%.16e' safe_stride='{nsteps}'>
  <output prefix='sim'>
    <properties filename='out' stride='1'>
      [ step, potential, potential{{electronvolt}}, conserved, volume, virial_md ]
    </properties>
    <trajectory filename='pos' stride='1' format='ase'> positions </trajectory>
  </output>
  <total_steps> {nsteps} </total_steps>
  <prng><seed> 31415 </seed></prng>
  <ffsocket name='polypot' mode='unix' pbc='false'>
    <address> {socket} </address>
  </ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='xyz'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='polypot'/></forces>
    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nve'><timestep units='femtosecond'> 0.5 </timestep></dynamics>
    </motion>
  </system>
</simulation>
"""


def write_xyz(path: Path, coord: np.ndarray, cell: np.ndarray, atype: np.ndarray) -> None:
    """An XYZ file with i-PI's cell comment (orthorhombic cell, Å)."""
    names = np.array(["O", "H"])[atype]
    a, b, c = np.diag(cell)
    lines = [str(len(coord)),
             f"# CELL(abcABC): {a:.10f} {b:.10f} {c:.10f} 90 90 90 "
             "positions{angstrom} cell{angstrom}"]
    lines += [f"{n} {x:.10f} {y:.10f} {z:.10f}" for n, (x, y, z) in zip(names, coord, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def socket_name(tmp_path: Path) -> str:
    """A unix socket name unique to this process and test folder."""
    return f"polypot_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"


def write_config(path: Path, **overrides: object) -> Path:
    config = {"graph_file": str(MODEL), "coord_file": "init.xyz", "atom_type": {"O": 0, "H": 1},
              "use_unix": True, "port": 31415, "host": "unused", "verbose": False}
    config.update(overrides)
    config = {k: v for k, v in config.items() if v is not None}
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def water_dir(tmp_path: Path) -> Path:
    coord, cell, atype = water_box(64, seed=1)  # 192 atoms, 12.4 Å cube
    write_xyz(tmp_path / "init.xyz", coord, cell, atype)
    return tmp_path


def wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    """Wait until i-PI has created its socket (or died)."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"i-PI did not open {path}: {proc.communicate()}")
        time.sleep(0.1)


@pytest.mark.skipif(not I_PI.exists(), reason="i-pi command not installed")
def test_ipi_nve_energies_match_deeppot(water_dir: Path) -> None:
    """i-PI's recorded potential (and virial) at every step equal DeepPot on i-PI's geometry.

    Tolerance 1e-6 eV: the trajectory rounds positions to 1e-8 Å, which moves a 192-atom
    energy by ~1e-7 eV at most; everything else is exact in float64 (measured 1e-8 eV).
    """
    from ase import units
    from ase.io import read

    from polypot import DeepPot

    name = socket_name(water_dir)
    socket = Path(f"/tmp/ipi_{name}")
    socket.unlink(missing_ok=True)
    (water_dir / "input.xml").write_text(IPI_INPUT.format(nsteps=NSTEPS, socket=name))
    config = write_config(water_dir / "config.json", host=name, timeout=30)
    log = open(water_dir / "ipi.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([str(I_PI), "input.xml"], cwd=water_dir, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_for(socket, server, 30)
        assert main(["ipi", str(config)]) == 0
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
        socket.unlink(missing_ok=True)
    assert server.returncode == 0, (water_dir / "ipi.log").read_text()

    out = np.loadtxt(water_dir / "sim.out", ndmin=2)
    frames = read(water_dir / "sim.pos_0.extxyz", index=":")
    assert len(out) == len(frames) == NSTEPS + 1  # the initial geometry, then each step
    # format='ase' writes Å converted from i-PI's Bohr with ASE's constants, as the client
    # converts them (8 decimals: 5e-9 Å); the Hartree column (%.16e) times ASE's Hartree is
    # the energy the client sent
    coord = np.stack([f.positions for f in frames])
    cell = np.stack([f.cell.array for f in frames])
    atype = np.where(np.array(frames[0].get_chemical_symbols()) == "O", 0, 1)
    energy, _, virial = DeepPot(MODEL).eval(coord, cell, atype)[:3]
    energy = energy[:, 0]
    e_ipi = out[:, 1] * units.Ha
    err = np.abs(e_ipi - energy).max()
    print(f"max |E_ipi - E_deeppot| = {err:.3e} eV over {NSTEPS} steps")
    assert err < 1e-6
    vir = out[:, 5:11] * out[:, 4:5] * units.Ha  # i-PI's virial/V [xx yy zz xy xz yz] * V
    ref = virial.reshape(-1, 3, 3)[:, [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
    # the virial i-PI received (virial_md = virial / V, Hartree/Bohr^3) is DeepPot's virial
    assert np.abs(vir - ref).max() < 1e-6
    # NVE with these forces conserves energy: wrong force units/sign would drift by ~ptp(E)
    assert np.ptp(out[:, 3]) * units.Ha < 0.01 * np.ptp(energy)
    assert np.ptp(energy) > 10 * err  # the geometry really moved
    # i-PI's own eV column uses its 8-digit Hartree constant (0.036749326 / eV): 1e-7 relative
    np.testing.assert_allclose(out[:, 2], energy, rtol=2e-7, atol=0)


def test_ipi_timeout_without_server(water_dir: Path, capsys: pytest.CaptureFixture) -> None:
    name = socket_name(water_dir) + "_none"
    config = write_config(water_dir / "config.json", host=name, timeout=2)
    start = time.monotonic()
    assert main(["ipi", str(config)]) != 0
    assert time.monotonic() - start < 20
    err = capsys.readouterr().err
    assert f"could not connect to i-PI at unix socket /tmp/ipi_{name} within 2 s" in err
    assert "Traceback" not in err


def test_ipi_tcp_timeout_message(water_dir: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(water_dir / "config.json", use_unix=False, host="127.0.0.1",
                          port=1, timeout=1)
    assert main(["ipi", str(config)]) == 2
    assert "could not connect to i-PI at 127.0.0.1:1 within 1 s" in capsys.readouterr().err


@pytest.mark.parametrize(("overrides", "message"), [
    ({"graph_file": None}, "missing required key(s) 'graph_file'"),
    ({"atom_type": None}, "missing required key(s) 'atom_type'"),
    ({"graph_file": "nope.pth"}, "key 'graph_file': file nope.pth"),
    ({"coord_file": "nope.xyz"}, "key 'coord_file': file nope.xyz"),
    ({"port": "31415"}, "key 'port' must be an integer"),
    ({"use_unix": 1}, "key 'use_unix' must be true or false"),
    ({"atom_type": {"O": 0, "H": -1}}, "key 'atom_type': the type of 'H'"),
    ({"graph": "x"}, "unknown key(s) 'graph'"),
])
def test_ipi_bad_config(water_dir: Path, capsys: pytest.CaptureFixture, overrides: dict,
                        message: str) -> None:
    config = write_config(water_dir / "config.json", **overrides)
    assert main(["ipi", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polypot ipi: error: ")
    assert message in err


def test_ipi_element_not_in_atom_type(water_dir: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(water_dir / "config.json", atom_type={"O": 0}, timeout=1)
    assert main(["ipi", str(config)]) == 2
    err = capsys.readouterr().err
    assert "atom name(s) H of coord_file" in err and "'atom_type'" in err


def test_ipi_type_index_beyond_model(water_dir: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(water_dir / "config.json", atom_type={"O": 0, "H": 2}, timeout=1)
    assert main(["ipi", str(config)]) == 2
    assert "uses type index 2" in capsys.readouterr().err


def test_ipi_config_paths_and_defaults(water_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths fall back to the config's folder; DeePMD-kit's example keys load."""
    shutil.copy(MODEL, water_dir / "graph.dp")
    path = write_config(water_dir / "water.json", graph_file="graph.dp")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_config(path)
    assert config.graph_file == water_dir / "graph.dp"
    assert config.coord_file == water_dir / "init.xyz"
    assert config.address() == "unix socket /tmp/ipi_unused"
    assert config.timeout == 60.0 and config.backend is None
    tcp = check_config({"graph_file": str(MODEL), "coord_file": str(water_dir / "init.xyz"),
                        "atom_type": {"OW": 0, "HW1": 1, "HW2": 1}})
    assert (tcp.use_unix, tcp.host, tcp.port) == (False, "localhost", 31415)
    with pytest.raises(IPIConfigError, match="JSON object"):
        check_config([1, 2])


def serve(server: object, frames: list, results: list) -> None:
    """Server thread: send each geometry, collect the answers, then EXIT."""
    try:
        for atoms in frames:
            results.append(server.calculate(atoms))
        server.protocol.end()
    except Exception as err:  # noqa: BLE001 - reported to the test through results
        results.append(err)
    finally:
        server.close()


def test_ipi_tcp_with_ase_server(water_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """Over TCP, against ASE's i-PI server: verbose energies, virial = DeepPot's, clean EXIT."""
    import threading

    from ase.calculators.socketio import SocketServer
    from ase.io import read

    from polypot import DeepPot

    atoms = read(water_dir / "init.xyz")
    atoms.cell = np.eye(3) * 12.4171267044
    atoms.pbc = True
    frames = [atoms, atoms.copy()]
    frames[1].positions += 0.01
    server = SocketServer(port=0, timeout=60)
    port = server.serversocket.getsockname()[1]
    results: list = []
    thread = threading.Thread(target=serve, args=(server, frames, results), daemon=True)
    thread.start()
    config = write_config(water_dir / "config.json", use_unix=False, host="localhost",
                          port=port, verbose=True, timeout=10)
    assert main(["ipi", str(config)]) == 0
    thread.join(timeout=30)
    assert len(results) == 2 and all(isinstance(r, dict) for r in results), results
    atype = np.where(np.array(atoms.get_chemical_symbols()) == "O", 0, 1)
    for got, geo in zip(results, frames, strict=True):
        energy, force, virial = DeepPot(MODEL).eval(geo.positions[None], geo.cell.array[None],
                                                    atype)[:3]
        np.testing.assert_allclose(got["energy"], energy[0, 0], rtol=1e-12)
        np.testing.assert_allclose(got["forces"], force[0], atol=1e-10)
        np.testing.assert_allclose(got["virial"], virial.reshape(3, 3), atol=1e-10)
    out = capsys.readouterr().out
    assert f"connected to i-PI at localhost:{port}" in out
    assert out.count(" energy ") == 2 and "2 evaluations" in out


def test_ipi_atom_count_mismatch(water_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """i-PI's structure has more atoms than coord_file: a clear error, not a traceback."""
    import threading

    from ase.calculators.socketio import SocketServer
    from ase.io import read

    atoms = read(water_dir / "init.xyz")
    atoms.cell = np.eye(3) * 12.4171267044
    atoms.pbc = True
    (water_dir / "small.xyz").write_text("3\n\nO 0 0 0\nH 1 0 0\nH 0 1 0\n")
    server = SocketServer(port=0, timeout=60)
    port = server.serversocket.getsockname()[1]
    results: list = []
    thread = threading.Thread(target=serve, args=(server, [atoms], results), daemon=True)
    thread.start()
    config = write_config(water_dir / "config.json", coord_file="small.xyz", use_unix=False,
                          port=port, host="localhost", timeout=10)
    assert main(["ipi", str(config)]) == 2
    thread.join(timeout=30)
    err = capsys.readouterr().err
    assert "i-PI's structure does not match coord_file" in err and "(3 atoms)" in err
