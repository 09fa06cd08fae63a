"""Descriptors: atomic environments -> per-atom feature vectors (nf, nloc, dim_out)."""

from .dpa2 import DescrptDPA2
from .se_atten import DescrptSeAtten
from .se_e2_a import DescrptSeA

__all__ = ["DescrptDPA2", "DescrptSeA", "DescrptSeAtten"]
