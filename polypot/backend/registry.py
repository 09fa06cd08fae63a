"""Backend registry: which frameworks are installed (detected lazily) and which file suffix
belongs to which backend. No framework is imported until its backend is asked for."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str  # polypot module implementing it
    framework: str  # top-level import name of the framework
    suffixes: tuple[str, ...]  # frozen-file suffixes it owns


BACKENDS: dict[str, BackendInfo] = {
    "numpy": BackendInfo("numpy", "polypot.backend.numpy", "numpy", (".dp", ".yaml", ".yml")),
    "torch": BackendInfo("torch", "polypot.backend.torch", "torch", (".pth", ".pt2")),
    "jax": BackendInfo("jax", "polypot.backend.jax", "jax", (".hlo",)),
    "tensorflow": BackendInfo("tensorflow", "polypot.backend.tensorflow", "tensorflow",
                              (".savedmodel",)),
    "paddle": BackendInfo("paddle", "polypot.backend.paddle", "paddle", (".json",)),
}
ALIASES = {"pt": "torch", "pytorch": "torch", "tf": "tensorflow", "pd": "paddle", "np": "numpy",
           "dp": "numpy"}
#: autodiff backends tried, in order, when a neutral file needs forces
AUTODIFF_PREFERENCE = ("torch", "jax", "tensorflow", "paddle")

_instances: dict[str, Any] = {}


def canonical_name(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return key


def is_installed(name: str) -> bool:
    """Whether the framework behind backend ``name`` can be imported (without importing it)."""
    info = BACKENDS[canonical_name(name)]
    if importlib.util.find_spec(info.framework) is None:
        return False
    try:
        return importlib.util.find_spec(info.module) is not None
    except ModuleNotFoundError:
        return False


def available() -> list[str]:
    """Backends whose framework is installed."""
    return [n for n in BACKENDS if is_installed(n)]


def get_backend(name: str) -> Any:
    """The backend object for ``name`` (imports its framework on first use)."""
    key = canonical_name(name)
    if key not in _instances:
        if not is_installed(key):
            raise ImportError(
                f"backend {key!r} is not available: install it with pip install 'polypot[{key}]'"
            )
        mod = _import_backend_module(key)
        _instances[key] = next(
            getattr(mod, a)() for a in dir(mod)
            if a.endswith("Backend") and a != "Backend" and getattr(getattr(mod, a), "name",
                                                                      None) == key
        )
    return _instances[key]


def backend_for_file(path: str | Path) -> str:
    """Backend that owns a model file, by suffix (``.pth`` -> torch, ``.dp`` -> numpy, ...)."""
    suffix = Path(path).suffix.lower()
    for info in BACKENDS.values():
        if suffix in info.suffixes:
            return info.name
    known = sorted(s for b in BACKENDS.values() for s in b.suffixes)
    raise ValueError(f"{path}: unknown model file suffix {suffix!r}; expected one of {known}")


def default_autodiff_backend() -> str | None:
    """First installed autodiff backend, or None when only NumPy is present."""
    for name in AUTODIFF_PREFERENCE:
        if is_installed(name):
            return name
    return None


def _import_backend_module(key: str) -> Any:
    """Import polypot's module for backend ``key``.

    Importing TensorFlow and then Paddle in one process crashes Paddle (a protobuf clash); Paddle
    first works. So when both are installed, Paddle is imported before TensorFlow.
    """
    if key == "tensorflow" and "paddle" not in sys.modules and is_installed("paddle") \
            and "tensorflow" not in sys.modules:
        _import_paddle()
    if key == "paddle":
        _import_paddle()
    return importlib.import_module(BACKENDS[key].module)


def _import_paddle() -> None:
    # Paddle warns at import that a C++ compiler cache is missing; it only matters for building
    # Paddle extensions, which polypot never does
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        importlib.import_module("paddle")


def _backend_module(path: str | Path) -> Any:
    name = backend_for_file(path)
    if name == "numpy":
        raise ValueError(f"{path}: .dp/.yaml are neutral files, not frozen programs")
    if not is_installed(name):
        raise ImportError(
            f"{path} is a {name} model, but {BACKENDS[name].framework} is not installed: "
            f"pip install 'polypot[{name}]'"
        )
    return _import_backend_module(name)


def freeze(path: str | Path, model: Any, params: Any, model_def_script: dict | None = None
           ) -> None:
    """Write the frozen file of the backend that owns ``path``'s suffix."""
    _backend_module(path).freeze(model, params, path, model_def_script=model_def_script)


def load_frozen(path: str | Path) -> Any:
    """Load a frozen file (``FrozenModel``) with the backend that owns its suffix."""
    if not Path(path).exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return _backend_module(path).load_frozen(path)
