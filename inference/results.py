"""Plain result objects returned by the pipelines (no database, no web types).

Findings carry the model's name and version so the service can store them,
de-duplicate re-runs (same input, same version -> same ``Finding.key``) and
write them out as DICOM SR/SEG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from models.card import DecisionThresholds


class Priority(StrEnum):
    """Triage priority a finding asks for; the service combines it with the referrer's urgency flag."""

    ROUTINE = "routine"
    URGENT = "urgent"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Priority.ROUTINE: 0, Priority.URGENT: 1, Priority.CRITICAL: 2}


def priority_for(score: float, thresholds: DecisionThresholds) -> Priority:
    """Critical / urgent / routine from the card's per-label thresholds."""
    if thresholds.critical is not None and score >= thresholds.critical:
        return Priority.CRITICAL
    if thresholds.urgent is not None and score >= thresholds.urgent:
        return Priority.URGENT
    return Priority.ROUTINE


def highest_priority(priorities: list[Priority]) -> Priority:
    return max(priorities, key=lambda p: p.rank, default=Priority.ROUTINE)


@dataclass(frozen=True)
class BoundingBox:
    """Axis-aligned box in image pixels: column ``x``, row ``y`` (level 0 for slides), exclusive extent."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Finding:
    """One labelled result of one model version on one series or slide."""

    label: str
    score: float
    priority: Priority
    model_name: str
    model_version: str
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    slice_index: int | None = None
    bbox: BoundingBox | None = None
    mask: NDArray[np.bool_] | None = field(default=None, repr=False, compare=False)
    heatmap: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        """Stable identity for idempotent storage: model version + image + label."""
        subject = self.series_instance_uid or "-"
        return f"{self.model_name}@{self.model_version}/{subject}/{self.label}"


@dataclass(frozen=True)
class SeriesTriageResult:
    """Everything one model produced for one DICOM series."""

    model_name: str
    model_version: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uids: tuple[str, ...]
    scores: dict[str, float]
    findings: list[Finding]
    heatmap: NDArray[np.float32] = field(repr=False, compare=False)
    """(labels, slices) slice scores (classification) or (labels, z, y, x) probabilities (segmentation)."""

    @property
    def priority(self) -> Priority:
        return highest_priority([f.priority for f in self.findings])


@dataclass(frozen=True)
class TileScore:
    """A scored tile, in level-0 pixels, with its grid position."""

    label: str
    score: float
    col: int
    row: int
    bbox: BoundingBox


@dataclass(frozen=True)
class SlideTriageResult:
    """Everything one model produced for one whole slide."""

    model_name: str
    model_version: str
    slide: str
    dimensions: tuple[int, int]
    slide_mpp: float
    model_mpp: float
    tile_size_level0: float
    tiles_total: int
    tiles_scored: int
    scores: dict[str, float]
    findings: list[Finding]
    top_tiles: list[TileScore]
    heatmap: NDArray[np.float32] = field(repr=False, compare=False)
    """(labels, rows, cols): cell (r, c) covers level-0 pixels from ``c*tile_size_level0``; 0 off tissue."""
    tissue_grid: NDArray[np.bool_] = field(repr=False, compare=False)
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def priority(self) -> Priority:
        return highest_priority([f.priority for f in self.findings])

    @property
    def tiles_per_second(self) -> float:
        seconds = self.timings.get("tiles", 0.0)
        return self.tiles_scored / seconds if seconds > 0 else 0.0
