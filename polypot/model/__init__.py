"""The reference Deep Potential model, written once against the Python Array API standard.

Nothing here imports a deep-learning framework: every function takes its array namespace from
its inputs, so NumPy, PyTorch, JAX, TensorFlow and Paddle run this same code.
"""

from .atomic_model import DPAtomicModel
from .build import build_model
from .errors import ModelFormatError
from .model import EnergyModel

__all__ = ["DPAtomicModel", "EnergyModel", "ModelFormatError", "build_model"]
