"""What one browser session carries in ``gr.State``: the user's token, who they are, their language.

Never module globals: two users of one viewer process must not see each other's token or case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from viewer.i18n import DEFAULT_LANGUAGE

SPECIALIST_ROLES = frozenset({"radiologist", "pathologist", "surgeon", "trainer", "admin"})
REFERRER_ROLES = frozenset({"referrer", "admin"})
ML_ROLES = frozenset({"ml_engineer", "admin"})


@dataclass
class UserSession:
    token: str
    user: dict[str, Any]
    lang: str = DEFAULT_LANGUAGE

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.user.get("roles", []))

    @property
    def is_specialist(self) -> bool:
        return bool(self.roles & SPECIALIST_ROLES)

    @property
    def is_referrer(self) -> bool:
        return bool(self.roles & REFERRER_ROLES)

    @property
    def is_ml(self) -> bool:
        return bool(self.roles & ML_ROLES)


@dataclass
class SeriesRef:
    study_uid: str
    series_uid: str
    label: str
    instances: list[str] = field(default_factory=list)


@dataclass
class SliceView:
    """The DICOM viewer's state for the open case: which series and slice, window, zoom, overlay."""

    case_id: str = ""
    series: list[SeriesRef] = field(default_factory=list)
    series_index: int = 0
    slice_index: int = 0
    window: tuple[float, float] = (40.0, 400.0)
    zoom: float = 1.0
    centre: tuple[float, float] = (0.5, 0.5)
    overlay: bool = True
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current(self) -> SeriesRef | None:
        return self.series[self.series_index] if 0 <= self.series_index < len(self.series) else None

    @property
    def slice_count(self) -> int:
        return len(self.current.instances) if self.current else 0
