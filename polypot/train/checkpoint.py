"""Training checkpoints: one ``.npz`` per save (no pickle), written atomically.

A checkpoint holds every parameter (``param/<path>``), Adam's moments (``adam_m/<path>``,
``adam_v/<path>``) and a JSON ``meta`` record: the completed step count, the normalised input
(with ``sel`` resolved), the data sampler's state and the polypot version. ``checkpoint`` (a text
file beside them, as DeePMD-kit writes) names the latest one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..io.neutral import atomic_write

POINTER = "checkpoint"
SUFFIX = ".npz"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not match the model."""


def checkpoint_path(prefix: str | os.PathLike, step: int) -> Path:
    return Path(f"{prefix}-{step}{SUFFIX}")


def save_checkpoint(path: Path, params: dict[str, np.ndarray], opt_state: dict | None,
                    meta: dict) -> None:
    """Write a checkpoint atomically (flat NumPy dicts in, see the module docstring)."""
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    if opt_state is not None:
        for part in ("m", "v"):
            arrays.update({f"adam_{part}/{k}": np.asarray(v) for k, v in opt_state[part].items()})
    record = dict(meta, polypot_version=__version__)
    arrays["meta"] = np.asarray(json.dumps(record))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(Path(path), write)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict | None, dict]:
    """(params, opt_state or None, meta) of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        meta = json.loads(str(data.pop("meta")))
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} is not a polypot checkpoint ({err})") from None
    params = {k[6:]: v for k, v in data.items() if k.startswith("param/")}
    moments = {p: {k[7:]: v for k, v in data.items() if k.startswith(f"adam_{p}/")}
               for p in ("m", "v")}
    opt = moments if moments["m"] else None
    return params, opt, meta


def write_pointer(folder: Path, latest: Path) -> None:
    atomic_write(folder / POINTER, lambda tmp: tmp.write_text(latest.name + "\n"))


def latest_checkpoint(folder: str | os.PathLike = ".") -> Path:
    """The checkpoint named by ``folder/checkpoint``, else the highest-step ``*-N.npz``."""
    folder = Path(folder)
    pointer = folder / POINTER
    if pointer.is_file():
        target = folder / pointer.read_text().strip()
        if target.is_file():
            return target
    found = sorted(((int(m.group(1)), p) for p in folder.glob(f"*{SUFFIX}")
                    if (m := re.search(r"-(\d+)\.npz$", p.name))), key=lambda t: t[0])
    if not found:
        raise CheckpointError(f"no checkpoint in {folder.resolve()} (expected {POINTER} or "
                              f"model.ckpt-STEP{SUFFIX}); pass one with -c")
    return found[-1][1]


def prune(prefix: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest ``prefix-STEP.npz`` checkpoints."""
    prefix = Path(prefix)
    pat = re.compile(re.escape(prefix.name) + r"-(\d+)\.npz$")
    found = sorted((int(m.group(1)), p) for p in prefix.parent.glob(f"{prefix.name}-*{SUFFIX}")
                   if (m := pat.match(p.name)))
    for _, p in found[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)


def as_jsonable(x: Any) -> Any:
    """Turn NumPy scalars/arrays inside a nested structure into plain JSON types."""
    if isinstance(x, dict):
        return {str(k): as_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [as_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def model_from_checkpoint(path: str | os.PathLike) -> tuple[Any, Any, dict]:
    """(model, nested NumPy params, meta) of a checkpoint."""
    from ..model.build import build_model
    from .params import flatten, unflatten

    flat, _, meta = load_checkpoint(path)
    model, template = build_model(meta["config"]["model"], seed=0)
    expected = flatten(template)
    bad = sorted(k for k in expected if k not in flat or flat[k].shape != expected[k].shape)
    if bad:
        raise CheckpointError(f"checkpoint {path} does not match its own model definition "
                              f"(first mismatching parameters: {bad[:3]})")
    return model, unflatten(flat, template), meta
