"""The ReviewSession API: who may open, join, invite and end, and what the timeline and audit keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.audit.models import AuditEvent
from consult_api.sessions.tokens import JOIN_TOKEN_TYPE
from tests.conftest import Actors, Network
from tests.consult_api.sessions.conftest import join, open_session


def _timeline(client: TestClient, as_: Actors, case_id: str) -> list[str]:
    response = client.get(f"/api/v1/cases/{case_id}/timeline", headers=as_["ref_d1"])
    assert response.status_code == 200, response.text
    return [e["type"] for e in response.json()]


def test_session_across_facilities_from_open_to_end(
    client: TestClient, as_: Actors, network: Network, case_id: str, session_factory: sessionmaker[Session]
) -> None:
    session = open_session(
        client, as_["rad_c1"], case_id, [{"user_id": network.uid("ref_d1"), "role": "speaker"}]
    )
    assert session["status"] == "live" and session["provider"] == "builtin"
    roles = {p["user_id"]: p["role"] for p in session["participants"]}  # type: ignore[attr-defined]
    assert roles == {network.uid("rad_c1"): "host", network.uid("ref_d1"): "speaker"}
    facilities = {p["facility_id"] for p in session["participants"]}  # type: ignore[attr-defined]
    assert facilities == {network.fid("C1"), network.fid("D1")}

    grant = join(client, as_["ref_d1"], session["id"])
    assert grant["role"] == "speaker" and grant["media"] == {"publish": True}
    assert str(grant["page_url"]).endswith(f"/page#token={grant['token']}")
    claims = jwt.decode(str(grant["token"]), options={"verify_signature": False})
    assert claims["typ"] == JOIN_TOKEN_TYPE and claims["sid"] == session["id"]
    assert claims["sub"] == network.uid("ref_d1") and claims["exp"] - claims["iat"] <= 600 + 1

    assert client.post(f"/api/v1/sessions/{session['id']}/leave", headers=as_["ref_d1"]).status_code == 204
    assert client.post(f"/api/v1/sessions/{session['id']}/end", headers=as_["ref_d1"]).status_code == 403
    ended = client.post(f"/api/v1/sessions/{session['id']}/end", headers=as_["rad_c1"])
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    again = client.post(f"/api/v1/sessions/{session['id']}/join", json={}, headers=as_["ref_d1"])
    assert again.status_code == 409

    assert _timeline(client, as_, case_id)[-6:] == [
        "session_created",
        "session_invited",
        "session_invited",
        "session_joined",
        "session_left",
        "session_ended",
    ]
    with session_factory() as db:
        actions = db.scalars(
            select(AuditEvent.action).where(AuditEvent.entity_id == session["id"]).order_by(AuditEvent.id)
        ).all()
    assert actions == [
        "session.create",
        "session.invite",
        "session.invite",
        "session.join",
        "session.leave",
        "session.end",
    ]


def test_only_users_who_see_the_case_get_in(
    client: TestClient, as_: Actors, network: Network, case_id: str
) -> None:
    session = open_session(client, as_["rad_c1"], case_id)
    sid = session["id"]
    # ref_d2 (another district, another hub) may not see the case: not invitable, no token, no page data.
    refused = client.post(
        f"/api/v1/sessions/{sid}/participants",
        json={"user_id": network.uid("ref_d2"), "role": "attendee"},
        headers=as_["rad_c1"],
    )
    assert refused.status_code == 422 and "may not see this case" in refused.json()["detail"]
    assert client.get(f"/api/v1/sessions/{sid}", headers=as_["ref_d2"]).status_code == 404
    assert client.post(f"/api/v1/sessions/{sid}/join", json={}, headers=as_["ref_d2"]).status_code == 404
    # Seeing the case is not enough: one must be invited.
    assert client.post(f"/api/v1/sessions/{sid}/join", json={}, headers=as_["ref_d1b"]).status_code == 403
    # Only hosts invite.
    invite = {"user_id": network.uid("ref_d1b"), "role": "attendee"}
    assert (
        client.post(f"/api/v1/sessions/{sid}/participants", json=invite, headers=as_["ref_d1"]).status_code
        == 403
    )


def test_recorded_session_needs_each_participants_consent(
    client: TestClient, as_: Actors, network: Network, case_id: str
) -> None:
    invitees = [{"user_id": network.uid("ref_d1"), "role": "attendee"}]
    session = open_session(client, as_["rad_c1"], case_id, invitees, record=True)
    assert session["record"] is True
    url = f"/api/v1/sessions/{session['id']}/join"
    refused = client.post(url, json={}, headers=as_["ref_d1"])
    assert refused.status_code == 403 and "recorded" in refused.json()["detail"]
    assert client.post(url, json={"recording_consent": False}, headers=as_["ref_d1"]).status_code == 403
    grant = join(client, as_["ref_d1"], session["id"], recording_consent=True)
    assert grant["media"] == {"publish": False}
    read = client.get(f"/api/v1/sessions/{session['id']}", headers=as_["ref_d1"]).json()
    consent = {p["user_id"]: p["recording_consent"] for p in read["participants"]}
    assert consent[network.uid("ref_d1")] is True


def test_scheduled_session_opens_for_the_host_or_near_its_time(
    client: TestClient, as_: Actors, network: Network, case_id: str
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    invitees = [{"user_id": network.uid("ref_d1"), "role": "speaker"}]
    session = open_session(client, as_["rad_c1"], case_id, invitees, scheduled_at=later)
    assert session["status"] == "scheduled" and session["started_at"] is None
    early = client.post(f"/api/v1/sessions/{session['id']}/join", json={}, headers=as_["ref_d1"])
    assert early.status_code == 409 and "opens at" in early.json()["detail"]
    join(client, as_["rad_c1"], session["id"])
    assert client.get(f"/api/v1/sessions/{session['id']}", headers=as_["ref_d1"]).json()["status"] == "live"
    join(client, as_["ref_d1"], session["id"])
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = client.post(
        f"/api/v1/cases/{case_id}/sessions", json={"title": "x", "scheduled_at": past}, headers=as_["rad_c1"]
    )
    assert response.status_code == 422
    listed = client.get(f"/api/v1/cases/{case_id}/sessions", headers=as_["ref_d1"]).json()
    assert [s["id"] for s in listed] == [session["id"]]


def test_session_page_is_static_and_locked_down(client: TestClient) -> None:
    page = client.get("/api/v1/sessions/any-id/page")
    assert page.status_code == 200 and '<video id="local"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (
        client.get("/api/v1/sessions/assets/session.js").headers["content-type"].startswith("text/javascript")
    )
    assert client.get("/api/v1/sessions/assets/other.js").status_code == 404
