"""The only code in the viewer that talks to the consult API: plain HTTP with the user's token.

The viewer runs in the same process as the API (``hoichan serve``) or on its own against a remote
API (``hoichan viewer --api URL``); both go through this class, so the viewer never depends on the
service's database or internals. Errors come back as ``ApiError`` carrying the API's problem
document, which the pages show as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

JSON = dict[str, Any]
API = "/api/v1"
DICOM_JSON = "application/dicom+json"


class ApiError(Exception):
    """A refused or failed API call, with the problem document's title and detail."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    title = str(body.get("title") or response.reason_phrase)
    detail = str(body.get("detail") or response.text[:200])
    raise ApiError(response.status_code, title, detail)


def sign_in(http: httpx.Client, username: str, password: str) -> str:
    """The OAuth2 password flow: a bearer token for this user."""
    response = http.post(f"{API}/auth/token", data={"username": username, "password": password})
    _raise_for(response)
    return str(response.json()["access_token"])


def routes(http: httpx.Client) -> frozenset[str]:
    """The API's route templates, to find out which optional APIs this server has."""
    response = http.get("/openapi.json")
    _raise_for(response)
    return frozenset(response.json().get("paths", {}))


class ApiClient:
    """Calls on behalf of one signed-in user; cheap to make per request from the token in state."""

    def __init__(self, http: httpx.Client, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    def _get(self, path: str, params: Mapping[str, Any] | None = None, accept: str | None = None) -> Any:
        headers = {**self.headers, **({"Accept": accept} if accept else {})}
        response = self.http.get(path, params=params, headers=headers)
        _raise_for(response)
        return response.json() if response.content else None

    def _bytes(self, path: str, params: Mapping[str, Any] | None = None, accept: str = "*/*") -> bytes:
        response = self.http.get(path, params=params, headers={**self.headers, "Accept": accept})
        _raise_for(response)
        return response.content

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body, headers=self.headers)
        _raise_for(response)
        return response.json() if response.content else None

    # users, facilities, cases
    def me(self) -> JSON:
        return dict(self._get(f"{API}/users/me"))

    def facilities(self) -> list[JSON]:
        return list(self._get(f"{API}/facilities"))

    def facility(self, facility_id: str) -> JSON:
        return dict(self._get(f"{API}/facilities/{facility_id}"))

    def cases(self, **filters: Any) -> JSON:
        params = {k: v for k, v in filters.items() if v not in (None, [], "", False)}
        return dict(self._get(f"{API}/cases", params=params))

    def case(self, case_id: str) -> JSON:
        return dict(self._get(f"{API}/cases/{case_id}"))

    def create_case(self, body: JSON) -> JSON:
        return dict(self._send("POST", f"{API}/cases", body))

    def update_case(self, case_id: str, body: JSON) -> JSON:
        return dict(self._send("PATCH", f"{API}/cases/{case_id}", body))

    def change_status(self, case_id: str, status: str, comment: str | None = None) -> JSON:
        body: JSON = {"status": status, **({"comment": comment} if comment else {})}
        return dict(self._send("POST", f"{API}/cases/{case_id}/status", body))

    def timeline(self, case_id: str) -> list[JSON]:
        return list(self._get(f"{API}/cases/{case_id}/timeline"))

    def comment(self, case_id: str, text: str) -> JSON:
        return dict(self._send("POST", f"{API}/cases/{case_id}/comments", {"text": text}))

    # DICOM
    def upload_dicom(self, case_id: str, paths: Iterable[Path]) -> JSON:
        files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
        response = self.http.post(
            f"{API}/cases/{case_id}/dicom", files=files, headers=self.headers, timeout=300
        )
        _raise_for(response)
        return dict(response.json())

    def studies(self, **keys: str) -> list[JSON]:
        return list(self._get("/dicom-web/studies", params=keys, accept=DICOM_JSON) or [])

    def case_studies(self, case_id: str) -> list[JSON]:
        """The studies attached to the case (by the case link, not by patient id), with their series."""
        return list(self._get(f"{API}/cases/{case_id}/studies") or [])

    def series(self, study_uid: str) -> list[JSON]:
        path = f"/dicom-web/studies/{study_uid}/series"
        return list(self._get(path, accept=DICOM_JSON) or [])

    def instances(self, study_uid: str, series_uid: str) -> list[JSON]:
        path = f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances"
        return list(self._get(path, params={"limit": 5000}, accept=DICOM_JSON) or [])

    def rendered(
        self, study_uid: str, series_uid: str, sop_uid: str, window: tuple[float, float] | None = None
    ) -> bytes:
        """A slice as JPEG, windowed by the server (center, width)."""
        path = f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered"
        params = {"window": f"{window[0]:g},{window[1]:g}"} if window else None
        return self._bytes(path, params=params, accept="image/jpeg")

    # slides
    def case_slides(self, case_id: str) -> list[JSON]:
        return list(self._get(f"{API}/cases/{case_id}/slides")["items"])

    def slide_region(self, slide_id: str, x: int, y: int, size: int, level: int = 0) -> bytes:
        params = {"x": x, "y": y, "width": size, "height": size, "level": level}
        return self._bytes(f"{API}/slides/{slide_id}/region", params=params, accept="image/jpeg")

    # findings (an API being built: callers check ``Capabilities.findings`` first)
    def findings(self, case_id: str) -> list[JSON]:
        return list(self._get(f"{API}/cases/{case_id}/findings"))

    def finding_heatmap(self, case_id: str, finding_id: str, max_side: int = 1024) -> bytes:
        """The finding's heatmap as a transparent PNG (over the whole slide, or the finding's slice)."""
        path = f"{API}/cases/{case_id}/findings/{finding_id}/heatmap"
        return self._bytes(path, params={"max_side": max_side}, accept="image/png")

    def review_finding(self, case_id: str, finding_id: str, decision: str, body: JSON) -> JSON:
        """``decision`` is accept, reject or amend (amend takes ``label`` and/or ``region``)."""
        path = f"{API}/cases/{case_id}/findings/{finding_id}/{decision}"
        return dict(self._send("POST", path, body))

    # opinions
    def opinions(self, case_id: str) -> list[JSON]:
        return list(self._get(f"{API}/cases/{case_id}/opinions"))

    def create_opinion(self, case_id: str, body: JSON) -> JSON:
        return dict(self._send("POST", f"{API}/cases/{case_id}/opinions", body))

    def edit_opinion(self, case_id: str, opinion_id: str, body: JSON) -> JSON:
        return dict(self._send("PATCH", f"{API}/cases/{case_id}/opinions/{opinion_id}", body))

    def sign_opinion(self, case_id: str, opinion_id: str) -> JSON:
        return dict(self._send("POST", f"{API}/cases/{case_id}/opinions/{opinion_id}/sign"))

    def opinion_pdf(self, case_id: str, opinion_id: str) -> bytes:
        path = f"{API}/cases/{case_id}/opinions/{opinion_id}/pdf"
        return self._bytes(path, accept="application/pdf")

    # optional APIs (video sessions, model registry, agreement statistics)
    def case_sessions(self, case_id: str) -> list[JSON]:
        body = self._get(f"{API}/cases/{case_id}/sessions")
        return list(body.get("items", []) if isinstance(body, dict) else body)

    def start_session(self, case_id: str, title: str) -> JSON:
        return dict(self._send("POST", f"{API}/cases/{case_id}/sessions", {"title": title}))

    def join_session(self, session_id: str) -> JSON:
        return dict(self._send("POST", f"{API}/sessions/{session_id}/join", {}) or {})

    def models(self) -> list[JSON]:
        body = self._get(f"{API}/models")
        return list(body.get("items", []) if isinstance(body, dict) else body)

    def agreement(self) -> list[JSON]:
        body = self._get(f"{API}/models/agreement")
        return list(body.get("items", []) if isinstance(body, dict) else body)
