"""Fittings: per-atom descriptor -> per-atom property."""

from .ener import EnergyFitting

__all__ = ["EnergyFitting"]
