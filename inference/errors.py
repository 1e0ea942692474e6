"""Errors raised by the inference pipelines, each with the fields a caller acts on."""

from __future__ import annotations

from typing import Any


class InferenceError(Exception):
    """Base class of every pipeline error."""


class InputSpecError(InferenceError):
    """The data cannot meet the card's input spec (wrong channels, no spacing, no mpp...)."""

    def __init__(self, model: str, field: str, expected: Any, actual: Any) -> None:
        self.model = model
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(f"model {model}: input {field} must be {expected!r}, data has {actual!r}")


class OutputSpecError(InferenceError):
    """The network returned a tensor the card's labels/activation cannot interpret."""

    def __init__(self, model: str, expected: Any, actual: Any) -> None:
        self.model = model
        self.expected = expected
        self.actual = actual
        super().__init__(f"model {model}: network output must be {expected}, got {actual}")


class SeriesError(InferenceError):
    """A set of instances that does not form one reconstructable series."""

    def __init__(self, series_instance_uid: str | None, reason: str) -> None:
        self.series_instance_uid = series_instance_uid
        self.reason = reason
        super().__init__(f"series {series_instance_uid or '<unknown>'}: {reason}")


class SlideError(InferenceError):
    """A slide that cannot be read or lacks what the pipeline needs."""

    def __init__(self, slide: str, reason: str) -> None:
        self.slide = slide
        self.reason = reason
        super().__init__(f"slide {slide}: {reason}")


class EmptySlideError(SlideError):
    """No tissue found: the slide is blank or all background, so there is nothing to triage."""

    def __init__(self, slide: str, reason: str = "no tissue found") -> None:
        super().__init__(slide, reason)


class ProviderUnavailableError(InferenceError):
    """The configuration demands an execution provider this ONNX Runtime build does not have."""

    def __init__(self, requested: tuple[str, ...], available: tuple[str, ...]) -> None:
        self.requested = requested
        self.available = available
        super().__init__(f"none of the execution providers {requested} is available (have {available})")


class NoApplicableModelError(InferenceError):
    """Routing found no active model for the study or slide."""

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(f"no active model applies to {description}")
