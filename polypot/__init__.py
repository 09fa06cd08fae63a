"""polypot: Deep Potential models on every deep-learning backend."""

__version__ = "0.1.0"

__all__ = ["DeepPot", "__version__"]


def __getattr__(name: str):  # lazy: importing polypot loads no framework and no model code
    if name == "DeepPot":
        from .infer.deep_pot import DeepPot

        return DeepPot
    raise AttributeError(name)
