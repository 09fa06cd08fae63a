"""Errors raised when a model dictionary or a model file is not what polypot expects."""


class ModelFormatError(ValueError):
    """A serialized model is malformed, unknown or too new. The message says where and why."""


def check_version(data: dict, what: str, newest: int, oldest: int = 1) -> int:
    """Return the ``@version`` of ``data`` after checking ``oldest <= version <= newest``."""
    version = data.get("@version", oldest)
    if not isinstance(version, int):
        raise ModelFormatError(f"{what}: '@version' must be an integer, got {version!r}")
    if version > newest:
        raise ModelFormatError(
            f"{what}: '@version' {version} is newer than this polypot supports (<= {newest}); "
            "upgrade polypot to read this model"
        )
    if version < oldest:
        raise ModelFormatError(
            f"{what}: '@version' {version} is older than this polypot supports (>= {oldest})"
        )
    return version


def check_class(data: dict, expected: str) -> None:
    """Check that ``data['@class']`` equals ``expected``."""
    if not isinstance(data, dict):
        raise ModelFormatError(f"expected a {expected!r} dictionary, got {type(data).__name__}")
    found = data.get("@class")
    if found != expected:
        raise ModelFormatError(f"expected '@class' {expected!r}, found {found!r}")
