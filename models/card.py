"""The model card: what a model version is, what it serves and how to feed it.

The card is the single description that routing, preprocessing, the ONNX
session and the result writers read, so a pipeline never hard-codes a window,
a spacing or a label. Cards are immutable once registered (a new behaviour is a
new version), hence ``frozen=True``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import CardValidationError

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MODEL_KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}@[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$"
PRIVATE_CODING_SCHEME = "99HOICHAN"


class Task(StrEnum):
    """What the network predicts; decides which pipeline runs it."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    SLIDE_CLASSIFICATION = "slide-classification"


class ModelState(StrEnum):
    """Lifecycle of a registered version: only ``active`` versions are routed to."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class Normalization(StrEnum):
    """How intensities are scaled after windowing, matching what training did."""

    NONE = "none"
    ZSCORE = "zscore"
    MINMAX = "minmax"
    MEAN_STD = "mean_std"


class Activation(StrEnum):
    """What turns the network's raw output into scores in [0, 1]."""

    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    NONE = "none"


class Aggregation(StrEnum):
    """How tile (or slice) scores become one score for the slide (or series)."""

    MAX = "max"
    MEAN = "mean"
    TOPK_MEAN = "topk_mean"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IntensityWindow(_Strict):
    """A display-style window (center/width, as in DICOM Window Center/Width) applied in HU."""

    center: float
    width: float = Field(gt=0)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.center - self.width / 2.0, self.center + self.width / 2.0


class Applicability(_Strict):
    """What a model serves; an empty list means "any" for that attribute."""

    modalities: list[str] = Field(default_factory=list)
    body_parts: list[str] = Field(default_factory=list)
    sop_class_uids: list[str] = Field(default_factory=list)
    stains: list[str] = Field(default_factory=list)


class InputSpec(_Strict):
    """The tensor the network expects and how to get there from pixels."""

    spatial_dims: Literal[2, 3]
    channels: int = Field(default=1, ge=1)
    patch_size: tuple[int, ...]
    spacing_mm: tuple[float, ...] | None = None
    mpp: float | None = Field(default=None, gt=0)
    window: IntensityWindow | None = None
    normalization: Normalization = Normalization.NONE
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    min_tissue_fraction: float = Field(default=0.25, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        _check_length("patch_size", self.patch_size, self.spatial_dims)
        if self.spacing_mm is not None:
            _check_length("spacing_mm", self.spacing_mm, self.spatial_dims)
        if self.normalization is Normalization.MEAN_STD:
            if self.mean is None or self.std is None:
                raise ValueError("normalization mean_std needs mean and std")
            _check_length("mean", self.mean, self.channels)
            _check_length("std", self.std, self.channels)
        return self


def _check_length(field: str, value: tuple[Any, ...], expected: int) -> None:
    if len(value) != expected:
        raise ValueError(f"{field} has {len(value)} values, expected {expected}")


class OutputSpec(_Strict):
    """How raw network outputs become per-label scores and one score per series/slide."""

    activation: Activation = Activation.SIGMOID
    aggregation: Aggregation = Aggregation.MAX
    top_k: int = Field(default=8, ge=1)


class DecisionThresholds(_Strict):
    """Score cut-offs: ``report`` makes a finding, ``urgent``/``critical`` raise the case priority."""

    report: float = Field(default=0.5, ge=0.0, le=1.0)
    urgent: float | None = Field(default=None, ge=0.0, le=1.0)
    critical: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        levels = [v for v in (self.report, self.urgent, self.critical) if v is not None]
        if levels != sorted(levels):
            raise ValueError("thresholds must satisfy report <= urgent <= critical")
        return self


class LabelCode(_Strict):
    """A coded concept for a label, used in DICOM SR/SEG (e.g. SNOMED CT)."""

    value: str
    scheme: str
    meaning: str


class ModelCard(_Strict):
    """One model version: identity, scope, input/output contract, thresholds and provenance.

    ``weights_sha256`` names the torch state dict kept beside the ONNX file (``weights.pt``)
    so the version can be fine-tuned; ``parent`` is the ``name@version`` it was fine-tuned
    from (absent for a model trained from scratch).
    """

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    task: Task
    serves: Applicability = Field(default_factory=Applicability)
    input: InputSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    labels: list[str] = Field(min_length=1)
    label_codes: dict[str, LabelCode] = Field(default_factory=dict)
    thresholds: dict[str, DecisionThresholds] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    onnx_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    weights_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    parent: str | None = Field(default=None, pattern=MODEL_KEY_PATTERN)
    architecture: str | None = None
    manufacturer: str = "Hoichan"
    intended_use: str = ""
    not_for_clinical_use: bool = True

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        unknown = (set(self.thresholds) | set(self.label_codes)) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds/label_codes name unknown labels: {sorted(unknown)}")
        if self.task is Task.SLIDE_CLASSIFICATION and (
            self.input.mpp is None or self.input.spatial_dims != 2
        ):
            raise ValueError("slide-classification needs input.mpp and spatial_dims 2")
        return self

    @property
    def key(self) -> str:
        """``name@version``: how logs, findings and errors name a model version."""
        return f"{self.name}@{self.version}"

    def thresholds_for(self, label: str) -> DecisionThresholds:
        return self.thresholds.get(label, DecisionThresholds())

    def code_for(self, label: str) -> LabelCode:
        """The coded concept for a label, or a private-scheme code so SR/SEG stay valid."""
        return self.label_codes.get(
            label, LabelCode(value=label, scheme=PRIVATE_CODING_SCHEME, meaning=label)
        )


def parse_card(data: dict[str, Any], source: Path) -> ModelCard:
    """Validate raw card data, naming the file in the error."""
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise CardValidationError(source, str(exc)) from exc


def load_card(path: Path) -> ModelCard:
    """Read a card from ``.json`` or ``.yaml``/``.yml``."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CardValidationError(path, str(exc)) from exc
    if not isinstance(data, dict):
        raise CardValidationError(path, "card must be a mapping")
    return parse_card(data, path)


def dump_card(card: ModelCard, path: Path) -> None:
    """Write a card as JSON (YAML if the suffix says so)."""
    data = card.model_dump(mode="json", exclude_none=True)
    if path.suffix in {".yaml", ".yml"}:
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
