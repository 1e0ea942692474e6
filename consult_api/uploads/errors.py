"""tus protocol failures, each with the status the tus specification gives it."""

from __future__ import annotations

from consult_api.errors import Conflict, HoichanError


class ChecksumMismatch(HoichanError):
    """The chunk's bytes do not match its ``Upload-Checksum``; the chunk was discarded."""

    status_code = 460
    title = "Checksum mismatch"


class OffsetMismatch(Conflict):
    title = "Upload offset mismatch"

    def __init__(self, given: int, committed: int) -> None:
        super().__init__(
            f"Upload-Offset {given} does not match the stored offset {committed}", offset=committed
        )


class UploadLocked(HoichanError):
    """Another request is writing this upload right now (a retry that overtook its original)."""

    status_code = 423
    title = "Locked"


class UploadGone(HoichanError):
    status_code = 410
    title = "Gone"


class UnsupportedMediaType(HoichanError):
    status_code = 415
    title = "Unsupported media type"


class UnsupportedVersion(HoichanError):
    status_code = 412
    title = "Precondition failed"
