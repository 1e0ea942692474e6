"""Routing: which model cards apply to a DICOM series or a whole slide.

Rules are data on the cards (``serves``), not code here: an empty list on a
card means "any", a non-empty one must contain the image's value. Missing
metadata never matches a card that restricts on it: a model for chest CT is
not run on a CT whose body part is unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from models.card import ModelCard, Task

SERIES_TASKS = frozenset({Task.CLASSIFICATION, Task.SEGMENTATION})
SLIDE_TASKS = frozenset({Task.SLIDE_CLASSIFICATION})


@dataclass(frozen=True)
class SeriesMetadata:
    """What routing needs from a DICOM series (attribute names from the standard)."""

    modality: str
    body_part_examined: str | None = None
    sop_class_uid: str | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> SeriesMetadata:
        return cls(
            modality=str(dataset.get("Modality", "")),
            body_part_examined=_optional(dataset.get("BodyPartExamined")),
            sop_class_uid=_optional(dataset.get("SOPClassUID")),
        )


@dataclass(frozen=True)
class SlideMetadata:
    """What routing needs from a whole-slide image; the stain usually comes from the case form."""

    stain: str | None = None


def _optional(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


STAIN_ALIASES = {"hande": "he", "hematoxylineosin": "he", "haematoxylineosin": "he"}


def normalize_term(value: str) -> str:
    """Case- and punctuation-insensitive form, so ``CHEST``, ``Chest`` and ``chest `` compare equal."""
    return re.sub(r"[^0-9a-z.]+", "", value.lower())


def normalize_stain(value: str) -> str:
    """Stain names as written on forms: ``H&E``, ``HE``, ``H and E``, ``Hematoxylin-Eosin`` are one stain."""
    term = normalize_term(value)
    return STAIN_ALIASES.get(term, term)


def _matches(allowed: Sequence[str], value: str | None, norm: Callable[[str], str] = normalize_term) -> bool:
    if not allowed:
        return True
    if value is None:
        return False
    return norm(value) in {norm(a) for a in allowed}


def applies_to_series(card: ModelCard, series: SeriesMetadata) -> bool:
    serves = card.serves
    return (
        card.task in SERIES_TASKS
        and _matches(serves.modalities, series.modality)
        and _matches(serves.body_parts, series.body_part_examined)
        and _matches(serves.sop_class_uids, series.sop_class_uid)
    )


def applies_to_slide(card: ModelCard, slide: SlideMetadata) -> bool:
    return card.task in SLIDE_TASKS and _matches(card.serves.stains, slide.stain, normalize_stain)


def route(metadata: SeriesMetadata | SlideMetadata, cards: Iterable[ModelCard]) -> list[ModelCard]:
    """The cards that apply, sorted by name then version so re-runs are deterministic."""
    if isinstance(metadata, SeriesMetadata):
        chosen = [c for c in cards if applies_to_series(c, metadata)]
    else:
        chosen = [c for c in cards if applies_to_slide(c, metadata)]
    return sorted(chosen, key=lambda c: (c.name, c.version))
