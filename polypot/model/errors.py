"""Re-export of :mod:`polypot.errors` for the model code."""

from ..errors import ModelFormatError, check_class, check_version

__all__ = ["ModelFormatError", "check_class", "check_version"]
