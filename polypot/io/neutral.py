"""DeePMD-kit's neutral model files: ``.dp`` (HDF5) and ``.yaml``.

``.dp``: every array under an ``@variables`` key is stored as dataset ``/variable_NNNN`` (in
traversal order) and replaced in the dictionary by that path; the dictionary is compact JSON in
the root attribute ``json``. ``.yaml``: arrays become ``{"@class": "np.ndarray", "@is_variable":
true, "@version": 1, "dtype": ..., "value": nested lists}``. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError

NEUTRAL_SUFFIXES = (".dp", ".yaml", ".yml")


def _map_variables(obj: Any, fn: Callable[[Any], Any], inside: bool = False) -> Any:
    """Apply ``fn`` to every leaf value found under an ``@variables`` key."""
    if isinstance(obj, dict):
        if obj.get("@is_variable") or (inside and obj.get("@class") == "np.ndarray"):
            return fn(obj)
        return {k: _map_variables(v, fn, inside or k == "@variables") for k, v in obj.items()}
    if isinstance(obj, list):
        if inside and not obj:
            return obj
        return [_map_variables(v, fn, inside) for v in obj]
    if inside:
        return fn(obj)
    return obj


def _stamp(data: dict) -> dict:
    from .. import __version__

    out = dict(data)
    out["software"] = "polypot"
    out["version"] = __version__
    out["time"] = str(datetime.now(UTC))
    return out


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp)`` on a temporary path in ``path``'s folder, then rename it to ``path``
    (file modes follow the umask); on any error the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; follow the umask like open() does
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- .dp ---------------------------------------------------------------------------------------
def _save_dp(path: Path, data: dict) -> None:
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            counter = 0

            def store(x: Any) -> Any:
                nonlocal counter
                if x is None:
                    return None
                if not isinstance(x, np.ndarray):
                    if isinstance(x, (int, float)):  # scalars such as min_nbor_dist
                        x = np.asarray(x)
                    else:
                        return x
                name = f"variable_{counter:04d}"
                counter += 1
                f.create_dataset(name, data=x)
                return "/" + name

            doc = _map_variables(data, store)
            f.attrs["json"] = json.dumps(doc, separators=(",", ":"))

    atomic_write(path, write)


def _load_dp(path: Path) -> dict:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ModelFormatError(f"{path}: not a readable .dp (HDF5) model file: {err}") from None
    with f:
        if "json" not in f.attrs:
            raise ModelFormatError(f"{path}: HDF5 file has no 'json' attribute; not a .dp model")
        try:
            doc = json.loads(f.attrs["json"])
        except (json.JSONDecodeError, TypeError) as err:
            raise ModelFormatError(
                f"{path}: the 'json' attribute is not valid JSON: {err}"
            ) from None

        def fetch(x: Any) -> Any:
            if isinstance(x, str) and x.startswith("/"):
                if x not in f:
                    raise ModelFormatError(f"{path}: dataset {x} is missing (truncated file?)")
                try:
                    value = f[x][()]
                    # scalars (e.g. min_nbor_dist) come back as Python numbers, as written
                    return value.item() if np.ndim(value) == 0 else value
                except OSError as err:
                    raise ModelFormatError(f"{path}: dataset {x} cannot be read: {err}") from None
            return x

        return _map_variables(doc, fetch)


# ---- .yaml -------------------------------------------------------------------------------------
def _save_yaml(path: Path, data: dict) -> None:
    import yaml

    def encode(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return {"@class": "np.ndarray", "@is_variable": True, "@version": 1,
                    "dtype": x.dtype.name, "value": x.tolist()}
        return x

    doc = _map_variables(data, encode)

    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            yaml.dump(doc, fh, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))

    atomic_write(path, write)


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        with open(path) as fh:
            doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise ModelFormatError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{path}: expected a YAML mapping at the top level")

    def decode(x: Any) -> Any:
        if isinstance(x, dict) and x.get("@class") == "np.ndarray":
            try:
                return np.asarray(x["value"], dtype=x.get("dtype", "float64"))
            except (KeyError, TypeError, ValueError) as err:
                raise ModelFormatError(f"{path}: malformed array entry: {err}") from None
        return x

    return _map_variables(doc, decode)


# ---- public ------------------------------------------------------------------------------------
def save_neutral(path: str | os.PathLike, data: dict) -> None:
    """Write a model dictionary to ``.dp`` or ``.yaml`` (chosen by suffix), atomically."""
    path = Path(path)
    data = _stamp(copy.copy(data))
    if path.suffix == ".dp":
        _save_dp(path, data)
    elif path.suffix in (".yaml", ".yml"):
        _save_yaml(path, data)
    else:
        raise ValueError(f"{path}: neutral model files end in .dp, .yaml or .yml")


def load_neutral(path: str | os.PathLike) -> dict:
    """Read a ``.dp`` / ``.yaml`` model file into a dictionary with NumPy arrays."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix == ".dp":
        data = _load_dp(path)
    elif path.suffix in (".yaml", ".yml"):
        data = _load_yaml(path)
    else:
        raise ValueError(f"{path}: neutral model files end in .dp, .yaml or .yml")
    if "model" not in data:
        raise ModelFormatError(f"{path}: the file has no 'model' entry; not a DeePMD-kit model")
    return data
