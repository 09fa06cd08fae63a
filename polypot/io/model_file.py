"""Save and load whole models (structure + parameters + metadata) as neutral files."""

from __future__ import annotations

import os
from typing import Any

from ..model.errors import ModelFormatError
from ..model.model import EnergyModel
from ..model.network import Params
from .neutral import load_neutral, save_neutral


def model_to_dict(model: EnergyModel, params: Params, model_def_script: dict | None = None,
                  min_nbor_dist: float | None = None) -> dict:
    """The top-level DeePMD-kit v3 dictionary of a model."""
    variables: dict[str, Any] = {}
    if min_nbor_dist is not None:
        variables["min_nbor_dist"] = float(min_nbor_dist)
    return {
        "backend": "polypot",
        "model": model.serialize(params),
        "model_def_script": model_def_script if model_def_script is not None else {},
        "@variables": variables,
    }


def model_from_dict(data: dict, source: str = "model") -> tuple[EnergyModel, Params]:
    """Model and parameters from a top-level dictionary; errors name ``source``."""
    try:
        return EnergyModel.deserialize(data["model"])
    except ModelFormatError as err:
        raise ModelFormatError(f"{source}: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ModelFormatError(f"{source}: malformed model dictionary ({err!r})") from None


def save_model(path: str | os.PathLike, model: EnergyModel, params: Params,
               model_def_script: dict | None = None, min_nbor_dist: float | None = None) -> None:
    """Write ``.dp`` or ``.yaml`` (by suffix) atomically."""
    save_neutral(path, model_to_dict(model, params, model_def_script, min_nbor_dist))


def load_model(path: str | os.PathLike) -> tuple[EnergyModel, Params, dict]:
    """(model, params, top-level metadata) from a ``.dp`` / ``.yaml`` file."""
    data = load_neutral(path)
    model, params = model_from_dict(data, str(path))
    return model, params, {k: v for k, v in data.items() if k != "model"}
