"""Slide errors: each says what was wrong with the file so the uploader can act on it."""

from __future__ import annotations

from consult_api.errors import HoichanError, InvalidInput


class SlideRejected(InvalidInput):
    """OpenSlide could not identify, open or read the file; it has been removed."""

    title = "Slide rejected"

    def __init__(self, reason: str, filename: str = "") -> None:
        super().__init__(
            f"{filename or 'the file'} is not a readable whole-slide image: {reason}", reason=reason
        )


class UnsafeArchive(SlideRejected):
    """A zip that could escape its folder, hide another archive, or expand without bound."""

    title = "Unsafe archive"


class TileOutOfRange(HoichanError):
    status_code = 404
    title = "Tile out of range"
