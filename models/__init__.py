"""Model registry: model cards, ONNX files with checksums, lifecycle state.

``models.networks`` (MONAI/torch definitions used by training) is deliberately
not imported here so the serving install works without torch.
"""

from models.card import (
    Activation,
    Aggregation,
    Applicability,
    DecisionThresholds,
    InputSpec,
    IntensityWindow,
    LabelCode,
    ModelCard,
    ModelState,
    Normalization,
    OutputSpec,
    Task,
    dump_card,
    load_card,
)
from models.errors import (
    CardValidationError,
    ChecksumMismatchError,
    MissingWeightsError,
    ModelExistsError,
    ModelNotFoundError,
    ModelRegistryError,
    ModelStateError,
    NoActiveVersionError,
)
from models.registry import ModelRegistry, RegisteredModel, default_root, sha256_file

__all__ = [
    "Activation",
    "Aggregation",
    "Applicability",
    "CardValidationError",
    "ChecksumMismatchError",
    "DecisionThresholds",
    "InputSpec",
    "IntensityWindow",
    "LabelCode",
    "MissingWeightsError",
    "ModelCard",
    "ModelExistsError",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelRegistryError",
    "ModelState",
    "ModelStateError",
    "NoActiveVersionError",
    "Normalization",
    "OutputSpec",
    "RegisteredModel",
    "Task",
    "default_root",
    "dump_card",
    "load_card",
    "sha256_file",
]
