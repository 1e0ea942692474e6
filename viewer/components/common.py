"""Helpers shared by the pages: error display and role checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from viewer.client import ApiError
from viewer.i18n import text
from viewer.state import UserSession

T = TypeVar("T")
Elements = dict[str, Any]


class Refused(Exception):
    """A page action the signed-in user's role does not allow (the API would refuse it too)."""


def lang_of(session: UserSession | None) -> str:
    return session.lang if session else "en"


def require(session: UserSession | None, allowed: Callable[[UserSession], bool]) -> UserSession:
    """The session if the user may use this page; hidden tabs are not the only guard."""
    if session is None or not allowed(session):
        raise Refused
    return session


def error_text(session: UserSession | None, exc: Exception) -> str:
    lang = lang_of(session)
    if isinstance(exc, Refused):
        return text(lang, "not_allowed")
    if isinstance(exc, ApiError):
        return text(lang, "error", detail=f"{exc.title} — {exc.detail}")
    return text(lang, "error", detail=str(exc))


HANDLED = (ApiError, Refused, httpx.HTTPError)
