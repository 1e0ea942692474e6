"""Session-specific failures, mapped to HTTP by the one handler and to close codes by signaling."""

from __future__ import annotations

from consult_api.errors import HoichanError


class ProviderUnavailable(HoichanError):
    """The configured SFU did not answer or refused a room operation."""

    status_code = 503
    title = "Video provider unavailable"


class RoomFull(HoichanError):
    """A built-in (mesh) session already has as many peers online as browsers can carry."""

    status_code = 409
    title = "Session full"
