"""The foundation's acceptance flow, through real HTTP on both database backends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from consult_api.audit.models import AuditEvent
from consult_api.audit.service import verify_chain
from tests.conftest import Actors, Network, move, new_case


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_referral_to_signed_opinion(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    case_id = case["id"]
    assert case["status"] == "draft"
    assert case["allowed_transitions"] == ["submitted"]

    # A draft is the referring facility's own business.
    assert client.get(f"/api/v1/cases/{case_id}", headers=as_["rad_c1"]).status_code == 404

    submitted = move(client, as_["ref_d1"], case_id, "submitted")
    assert submitted["deadline"] is not None

    worklist = client.get("/api/v1/cases", headers=as_["rad_c1"]).json()
    assert [c["id"] for c in worklist["items"]] == [case_id]

    taken = move(client, as_["rad_c1"], case_id, "in_review")
    assert taken["assigned_user_ids"] == [network.uid("rad_c1")]

    asked = move(client, as_["rad_c1"], case_id, "needs_info", "Please send prior imaging report")
    assert asked["status"] == "needs_info"
    edit = client.patch(
        f"/api/v1/cases/{case_id}", json={"clinical_notes": "Prior CT 2025: normal"}, headers=as_["ref_d1"]
    )
    assert edit.status_code == 200, edit.text
    move(client, as_["ref_d1"], case_id, "in_review", "Report attached in notes")

    draft = client.post(
        f"/api/v1/cases/{case_id}/opinions",
        json={"findings": "Right lower lobe consolidation", "impression": "Pneumonia"},
        headers=as_["rad_c1"],
    )
    assert draft.status_code == 201, draft.text
    opinion_id = draft.json()["id"]
    # Referrers see signed opinions only.
    assert client.get(f"/api/v1/cases/{case_id}/opinions", headers=as_["ref_d1"]).json() == []

    signed = client.post(f"/api/v1/cases/{case_id}/opinions/{opinion_id}/sign", headers=as_["rad_c1"])
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "signed"
    assert len(signed.json()["content_sha256"]) == 64

    concluded = client.get(f"/api/v1/cases/{case_id}", headers=as_["ref_d1"]).json()
    assert concluded["status"] == "concluded"
    opinions = client.get(f"/api/v1/cases/{case_id}/opinions", headers=as_["ref_d1"]).json()
    assert [o["impression"] for o in opinions] == ["Pneumonia"]

    move(client, as_["ref_d1"], case_id, "closed")

    # Another facility's referrer sees none of it.
    other = as_["ref_d2"]
    assert client.get(f"/api/v1/cases/{case_id}", headers=other).status_code == 404
    assert client.get(f"/api/v1/cases/{case_id}/opinions", headers=other).status_code == 404
    assert client.get("/api/v1/cases", headers=other).json()["items"] == []

    timeline = client.get(f"/api/v1/cases/{case_id}/timeline", headers=as_["ref_d1"]).json()
    statuses = [e["to_status"] for e in timeline if e["type"] == "status_changed"]
    assert statuses == ["submitted", "in_review", "needs_info", "in_review", "concluded", "closed"]

    with session_factory() as session:
        assert verify_chain(session).ok
    with session_factory.begin() as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == 5).values(actor="user:someone-else"))
    with session_factory() as session:
        report = verify_chain(session)
    assert not report.ok
    assert [p.event_id for p in report.problems] == [5]
