"""An i-PI client: ``polypot ipi CONFIG.json`` serves energies, forces and virials to i-PI.

Like DeePMD-kit's ``dp_ipi``. i-PI (the server) integrates the (path-integral) dynamics and sends
cell and positions; this client answers with the model's energy, forces and virial. The i-PI
wire protocol is ASE's :class:`ase.calculators.socketio.SocketClient`, which converts units
(Å/eV <-> Bohr/Hartree) and sends the virial as ``-stress * volume`` (i.e. ``sum r (x) f``, the
convention i-PI expects).

Config keys (DeePMD-kit's ``dp_ipi`` keys plus ``backend`` and ``timeout``):

``graph_file``  model file, any polypot suffix (required)
``coord_file``  XYZ file whose first column gives the atom names in i-PI's order; its
                coordinates are ignored (required)
``atom_type``   atom name -> type index in the model, e.g. ``{"O": 0, "H": 1}`` (required)
``use_unix``    true: unix socket ``/tmp/ipi_<host>``; false: TCP ``host:port`` (default false)
``port``        TCP port, as ``<port>`` in i-PI's input (default 31415)
``host``        host name, or the unix socket name (i-PI's ``<address>``) (default "localhost")
``verbose``     print each evaluated energy (default false)
``backend``     backend for ``.dp`` / ``.yaml`` models (default: polypot's choice)
``timeout``     seconds to keep trying to connect before giving up (default 60)

Relative paths are looked up from the current folder first (as ``dp_ipi`` does), then from the
config file's folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = [
    "IPIConfig",
    "IPIConfigError",
    "IPIConnectionError",
    "connect",
    "load_config",
    "read_atom_names",
    "run_driver",
]

DEFAULT_PORT = 31415
DEFAULT_TIMEOUT = 60.0
UNIX_PREFIX = "/tmp/ipi_"  # where i-PI (and ASE's client) put a unix socket named ``host``


class IPIConfigError(ValueError):
    """The ``polypot ipi`` config is malformed; the message names the key."""


class IPIConnectionError(ConnectionError):
    """No i-PI server answered within the timeout."""


@dataclass(frozen=True)
class IPIConfig:
    """A checked ``polypot ipi`` config (paths resolved)."""

    graph_file: Path
    coord_file: Path
    atom_type: dict[str, int]
    use_unix: bool = False
    port: int = DEFAULT_PORT
    host: str = "localhost"
    verbose: bool = False
    backend: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def address(self) -> str:
        """Human-readable server address, for messages."""
        if self.use_unix:
            return f"unix socket {UNIX_PREFIX}{self.host}"
        return f"{self.host}:{self.port}"


# (type check, description, default); _REQUIRED marks required keys
_REQUIRED = object()
_KEYS: dict[str, tuple[Any, str, Any]] = {
    "graph_file": (str, "a string (model file path)", _REQUIRED),
    "coord_file": (str, "a string (.xyz file path)", _REQUIRED),
    "atom_type": (dict, "an object mapping atom name -> type index", _REQUIRED),
    "use_unix": (bool, "true or false", False),
    "port": (int, "an integer port number", DEFAULT_PORT),
    "host": (str, "a string", "localhost"),
    "verbose": (bool, "true or false", False),
    "backend": (str, "a backend name (e.g. torch, jax)", None),
    "timeout": ((int, float), "a number of seconds", DEFAULT_TIMEOUT),
}


def _check_type(key: str, value: Any) -> None:
    """Raise IPIConfigError when ``value`` is not of the type ``key`` needs."""
    kind, text, default = _KEYS[key]
    if value is None and default is None:
        return
    # bool is an int subclass: refuse true/false where a number is wanted, and vice versa
    is_bool = isinstance(value, bool)
    ok = isinstance(value, kind) and (kind is bool or not is_bool)
    if not ok:
        raise IPIConfigError(f"key '{key}' must be {text}, got {json.dumps(value)}")


def _check_atom_type(atom_type: dict) -> dict[str, int]:
    """Atom names -> non-negative integer type indices."""
    if not atom_type:
        raise IPIConfigError("key 'atom_type' is empty; map each atom name to a type index")
    for name, index in atom_type.items():
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise IPIConfigError(
                f"key 'atom_type': the type of {name!r} must be a non-negative integer, "
                f"got {json.dumps(index)}")
    return {str(k): int(v) for k, v in atom_type.items()}


def _resolve(key: str, value: str, base: Path) -> Path:
    """``value`` as an existing file: from the current folder, else from ``base``."""
    path = Path(value).expanduser()
    for candidate in (path, base / path):
        if candidate.exists():
            return candidate
    where = str(path) if path.is_absolute() else f"{path} (nor {base / path})"
    raise FileNotFoundError(f"key '{key}': file {where} does not exist")


def check_config(data: Any, base: str | os.PathLike = ".") -> IPIConfig:
    """Validate a config dictionary; relative paths fall back to ``base``."""
    if not isinstance(data, dict):
        raise IPIConfigError(f"the config must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise IPIConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(_KEYS)}")
    missing = [k for k, (_, _, d) in _KEYS.items() if d is _REQUIRED and k not in data]
    if missing:
        raise IPIConfigError(f"missing required key(s) {', '.join(map(repr, missing))}")
    for key, value in data.items():
        _check_type(key, value)
    values = {k: data.get(k, d) for k, (_, _, d) in _KEYS.items()}
    if not 0 < values["port"] < 65536:
        raise IPIConfigError(f"key 'port' must be in 1..65535, got {values['port']}")
    if values["timeout"] <= 0:
        raise IPIConfigError(f"key 'timeout' must be positive, got {values['timeout']}")
    if values["use_unix"] and not values["host"]:
        raise IPIConfigError("key 'host' (the unix socket name) must not be empty")
    base = Path(base)
    values["graph_file"] = _resolve("graph_file", values["graph_file"], base)
    values["coord_file"] = _resolve("coord_file", values["coord_file"], base)
    values["atom_type"] = _check_atom_type(values["atom_type"])
    values["timeout"] = float(values["timeout"])
    return IPIConfig(**values)


def load_config(path: str | os.PathLike) -> IPIConfig:
    """Read and validate a JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise IPIConfigError(f"{path} is not valid JSON: {err}") from err
    return check_config(data, base=path.resolve().parent)


def read_atom_names(path: str | os.PathLike) -> list[str]:
    """Atom names (first column) of the first frame of an XYZ file; coordinates are ignored."""
    lines = Path(path).read_text().splitlines()
    try:
        natoms = int(lines[0].split()[0])
    except (IndexError, ValueError) as err:
        raise ValueError(f"coord_file {path}: first line must be the atom count") from err
    body = lines[2:2 + natoms]
    if natoms <= 0 or len(body) < natoms or any(not line.split() for line in body):
        raise ValueError(f"coord_file {path}: expected {natoms} atom lines after the comment")
    return [line.split()[0] for line in body]


def atom_types(names: list[str], atom_type: dict[str, int], coord_file: Path) -> np.ndarray:
    """Type index of each atom name; a clear error naming names missing from ``atom_type``."""
    missing = sorted(set(names) - set(atom_type))
    if missing:
        raise IPIConfigError(
            f"atom name(s) {', '.join(missing)} of coord_file {coord_file} are not in key "
            f"'atom_type' {atom_type}")
    return np.array([atom_type[n] for n in names], dtype=np.int64)


def build_atoms(types: np.ndarray, model_file: Path, backend: str | None) -> Any:
    """ASE atoms (placeholders for i-PI's structure) with a polypot DP calculator attached.

    Atom names in the XYZ file need not be elements (``OW``, ``HW1``): each model type gets a
    stand-in element symbol that the calculator maps back to that type. The positions and cell
    are overwritten by i-PI before every evaluation, so their initial values do not matter.
    """
    from ase import Atoms
    from ase.data import chemical_symbols

    from ..calculator import DP

    calc = DP(model_file, backend=backend)
    ntypes = len(calc.dp.get_type_map())
    if types.max() >= ntypes:
        raise IPIConfigError(
            f"key 'atom_type' uses type index {int(types.max())}, but {model_file} has only "
            f"{ntypes} types {calc.dp.get_type_map()}")
    stand_in = {t: chemical_symbols[t + 1] for t in range(ntypes)}
    calc.type_dict = {sym: t for t, sym in stand_in.items()}
    atoms = Atoms([stand_in[int(t)] for t in types], positions=np.zeros((len(types), 3)),
                  cell=np.eye(3), pbc=True)
    atoms.calc = calc
    return atoms


def connect(config: IPIConfig, poll: float = 0.2) -> Any:
    """An ASE :class:`SocketClient` connected to i-PI, retrying until ``config.timeout``."""
    from ase.calculators.socketio import SocketClient

    deadline = time.monotonic() + config.timeout
    unixsocket = config.host if config.use_unix else None
    while True:
        try:
            return SocketClient(host=config.host, port=config.port, unixsocket=unixsocket)
        except (ConnectionRefusedError, FileNotFoundError) as err:
            # nothing is listening yet (socket file absent, or refused): i-PI may still start
            last = err
        if time.monotonic() + poll > deadline:
            raise IPIConnectionError(
                f"could not connect to i-PI at {config.address()} within {config.timeout:g} s "
                f"({last.strerror or last}); is i-pi running with the same address/port?")
        time.sleep(poll)


def run_driver(config: IPIConfig, out: TextIO | None = None) -> int:
    """Serve i-PI until it sends EXIT or closes the socket; returns the number of evaluations."""
    out = out if out is not None else sys.stdout
    names = read_atom_names(config.coord_file)
    types = atom_types(names, config.atom_type, config.coord_file)
    atoms = build_atoms(types, config.graph_file, config.backend)
    client = connect(config)
    print(f"polypot ipi: connected to i-PI at {config.address()} "
          f"({len(names)} atoms, model {config.graph_file})", file=out, flush=True)
    count = 0
    try:
        for _ in client.irun(atoms, use_stress=True):
            count += 1
            if config.verbose:
                energy = atoms.calc.results["energy"]
                print(f"step {count:8d}  energy {energy:.10f} eV", file=out, flush=True)
    except ValueError as err:
        if "broadcast" in str(err):  # i-PI's atom count differs from the coord file's
            raise ValueError(
                f"i-PI's structure does not match coord_file {config.coord_file} "
                f"({len(names)} atoms): {err}") from err
        raise
    finally:
        client.close()
    print(f"polypot ipi: i-PI finished; {count} evaluations", file=out, flush=True)
    return count
