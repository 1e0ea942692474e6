"""One error base for the whole service; a single handler turns it into an RFC 9457 problem."""

from __future__ import annotations

from typing import Any


class HoichanError(Exception):
    """Base of every expected failure: carries the HTTP status and a message safe to show."""

    status_code = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_slug(self) -> str:
        return self.title.lower().replace(" ", "-")


class Unauthenticated(HoichanError):
    status_code = 401
    title = "Not authenticated"


class NotPermitted(HoichanError):
    """The caller may see the record but not do this to it."""

    status_code = 403
    title = "Not permitted"


class ResourceNotFound(HoichanError):
    """Also answered for records the caller may not see, so ids cannot be probed."""

    status_code = 404
    title = "Not found"

    def __init__(self, entity: str, entity_id: object) -> None:
        super().__init__(f"{entity} {entity_id} not found", entity=entity, id=str(entity_id))


class Conflict(HoichanError):
    status_code = 409
    title = "Conflict"


class InvalidTransition(Conflict):
    title = "Invalid transition"

    def __init__(self, current: str, requested: str, allowed: list[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"cannot move from {current} to {requested}; allowed from {current}: {allowed_text}",
            current=current,
            requested=requested,
            allowed=allowed,
        )


class InvalidInput(HoichanError):
    """Well-formed JSON that breaks a domain rule (an unknown referral target, say)."""

    status_code = 422
    title = "Invalid input"


class PayloadTooLarge(HoichanError):
    status_code = 413
    title = "Payload too large"


class StorageError(HoichanError):
    status_code = 507
    title = "Insufficient storage"


class TooManyRequests(HoichanError):
    """Throttled; ``retry_after`` (seconds) becomes the ``Retry-After`` header."""

    status_code = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after
