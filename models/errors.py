"""Errors raised by the model registry.

Each error carries the fields a caller needs to act on it (which model, which
version, what was expected) so the service can map it to a clear message
without parsing strings.
"""

from __future__ import annotations

from pathlib import Path


class ModelRegistryError(Exception):
    """Base class of every registry error, so callers can catch the family."""


class ModelNotFoundError(ModelRegistryError):
    """No model version of that name (and version) is in the registry."""

    def __init__(self, name: str, version: str | None, root: Path) -> None:
        self.name = name
        self.version = version
        self.root = root
        what = f"{name}@{version}" if version else name
        super().__init__(f"model {what} not found in registry {root}")


class NoActiveVersionError(ModelRegistryError):
    """A model name exists but none of its versions has been promoted."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model {name} has no active (promoted) version")


class ModelExistsError(ModelRegistryError):
    """Registering a version that is already present: versions are immutable."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"model {name}@{version} is already registered; versions are immutable")


class ChecksumMismatchError(ModelRegistryError):
    """The ONNX file on disk is not the file the card was approved with."""

    def __init__(self, model: str, expected: str, actual: str) -> None:
        self.model = model
        self.expected = expected
        self.actual = actual
        super().__init__(f"model {model}: ONNX sha256 is {actual}, card says {expected}")


class MissingWeightsError(ModelRegistryError):
    """A version has no torch weights to fine-tune from (registered from ONNX alone), or lost them."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"model {model} has no usable torch weights: {detail}")


class CardValidationError(ModelRegistryError):
    """A model card file could not be parsed or does not satisfy the schema."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"invalid model card {path}: {detail}")


class ModelStateError(ModelRegistryError):
    """A lifecycle transition that the current state does not allow (e.g. promote a retired model)."""

    def __init__(self, model: str, state: str, action: str) -> None:
        self.model = model
        self.state = state
        self.action = action
        super().__init__(f"cannot {action} model {model}: it is {state}")
