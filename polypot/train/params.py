"""Parameter trees as flat ``{"a/b/0/w": array}`` dicts, split into trained and fixed leaves.

Training, optimizer state and checkpoints work on flat dicts (simple pytrees on every backend);
the model takes the nested tree, rebuilt with :func:`unflatten` on the model's own template.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: leaves set by statistics, never by the optimizer (DeePMD-kit keeps them as buffers)
FIXED_LEAVES = frozenset({"davg", "dstd", "bias_atom_e", "out_bias", "out_std"})


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flat dict path -> array of every non-None leaf of a nested dict/list tree."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(tree))
    elif tree is None:
        return out
    else:
        return {prefix: tree}
    for key, value in items:
        out.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return out


def unflatten(flat: dict[str, Any], template: Any, prefix: str = "") -> Any:
    """The nested tree shaped like ``template`` with leaves taken from ``flat`` by path."""
    if isinstance(template, dict):
        return {k: unflatten(flat, v, f"{prefix}/{k}" if prefix else str(k))
                for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(unflatten(flat, v, f"{prefix}/{i}" if prefix else str(i))
                              for i, v in enumerate(template))
    if template is None:
        return None
    return flat[prefix]


def is_trainable(path: str) -> bool:
    """Whether the optimizer updates the leaf at ``path``."""
    return path.rsplit("/", 1)[-1] not in FIXED_LEAVES


def split(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable, fixed) parts of a flat parameter dict."""
    trainable = {k: v for k, v in flat.items() if is_trainable(k)}
    fixed = {k: v for k, v in flat.items() if not is_trainable(k)}
    return trainable, fixed


def map_flat(flat: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {k: fn(v) for k, v in flat.items()}
