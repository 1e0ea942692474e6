"""The case status machine, who may drive it, opinions and assignments, through real HTTP.

The expected machine is written here from shared/DESIGN.md
(``draft -> submitted -> triaged -> in_review <-> needs_info -> concluded -> closed``, and a
submitted case may be taken straight into review), not copied from ``workflow.TRANSITIONS``.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.auth.security import issue_access_token
from consult_api.cases import service, workflow
from consult_api.cases.models import Case, CaseAssignment, CaseStatus
from tests.conftest import Actors, Network, move, new_case

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
S = CaseStatus

EXPECTED_MACHINE: dict[str, set[str]] = {
    "draft": {"submitted"},
    "submitted": {"triaged", "in_review"},
    "triaged": {"in_review"},
    "in_review": {"needs_info", "concluded"},
    "needs_info": {"in_review"},
    "concluded": {"closed"},
    "closed": set(),
}
ALL_PAIRS = list(itertools.product(CaseStatus, CaseStatus))
COMMENT = "Please send the prior CT report"


class MintedActors(Actors):
    """Bearer headers per username, signed with the app's key: the very tokens /auth/token issues,
    without paying Argon2 for every login of every test (test_auth covers the login itself)."""

    def __init__(self, client: TestClient, network: Network) -> None:
        super().__init__(client)
        self.network = network

    def __getitem__(self, username: str) -> dict[str, str]:
        if username not in self._headers:
            settings = self.client.app.state.settings
            token, _ = issue_access_token(
                self.network.uid(username),
                key=settings.signing_key,
                algorithm=settings.jwt_algorithm,
                minutes=settings.access_token_minutes,
            )
            self._headers[username] = {"Authorization": f"Bearer {token}"}
        return self._headers[username]


@pytest.fixture
def as_(client: TestClient, network: Network) -> Actors:
    return MintedActors(client, network)


# --- the table itself ---------------------------------------------------------------------------


def test_machine_covers_every_status() -> None:
    assert set(workflow.TRANSITIONS) == set(CaseStatus)
    assert {s.value for s in CaseStatus} == set(EXPECTED_MACHINE)


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_legality_of_every_pair(current: CaseStatus, target: CaseStatus) -> None:
    legal = target.value in EXPECTED_MACHINE[current.value]
    assert workflow.is_legal(current, target) is legal
    assert (target in workflow.TRANSITIONS[current]) is legal
    assert (target in workflow.allowed_from(current)) is legal


# --- building cases in every status through the API --------------------------------------------


class Cases:
    """Makes D1 -> C1 cases in any status the way users (and the triage service) would."""

    def __init__(
        self, client: TestClient, network: Network, as_: Actors, factory: sessionmaker[Session]
    ) -> None:
        self.client, self.network, self.as_, self.factory = client, network, as_, factory

    def status(self, case_id: str, who: str = "admin") -> str:
        response = self.client.get(f"{API}/cases/{case_id}", headers=self.as_[who])
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    def triage(self, case_id: str) -> None:
        """What the AI triage service does: a system transition (no principal)."""
        with self.factory.begin() as session:
            case = session.get(Case, case_id)
            assert case is not None
            service.transition(session, None, case, S.triaged)

    def opinion(self, case_id: str, who: str = "rad_c1", **body: str) -> str:
        body = body or {"findings": "Right lower lobe consolidation", "impression": "Pneumonia"}
        response = self.client.post(f"{API}/cases/{case_id}/opinions", json=body, headers=self.as_[who])
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def sign(self, case_id: str, opinion_id: str, who: str = "rad_c1") -> httpx.Response:
        return self.client.post(f"{API}/cases/{case_id}/opinions/{opinion_id}/sign", headers=self.as_[who])

    def at(self, status: str, kind: str = "imaging") -> str:
        ref, rad = self.as_["ref_d1"], self.as_["rad_c1"]
        specialist = {"pathology": "path_c1"}.get(kind, "rad_c1")
        case_id = str(new_case(self.client, ref, self.network.fid("C1"), kind)["id"])
        path = ["draft", "submitted", "in_review", "needs_info", "concluded", "closed"]
        if status == "triaged":
            move(self.client, ref, case_id, "submitted")
            self.triage(case_id)
            return case_id
        for step in path[1 : path.index(status) + 1]:
            if step == "submitted":
                move(self.client, ref, case_id, "submitted")
            elif step == "in_review":
                move(self.client, self.as_[specialist], case_id, "in_review")
            elif step == "needs_info":
                move(self.client, rad, case_id, "needs_info", COMMENT)
            elif step == "concluded":
                move(self.client, ref, case_id, "in_review", "Report is in the notes")
                response = self.sign(case_id, self.opinion(case_id))
                assert response.status_code == 200, response.text
            elif step == "closed":
                move(self.client, ref, case_id, "closed")
        assert self.status(case_id) == status
        return case_id


@pytest.fixture
def cases(client: TestClient, network: Network, as_: Actors, session_factory: sessionmaker[Session]) -> Cases:
    return Cases(client, network, as_, session_factory)


def post_status(
    client: TestClient, headers: dict[str, str], case_id: str, status: str, comment: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"status": status}
    if comment is not None:
        body["comment"] = comment
    return client.post(f"{API}/cases/{case_id}/status", json=body, headers=headers)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["detail"]
    return body


# --- illegal transitions: 409 naming the allowed ones ------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_every_illegal_transition_is_409_with_allowed(cases: Cases, as_: Actors, subtests: Any) -> None:
    case_at = {status.value: cases.at(status.value) for status in CaseStatus}
    for current, target in ALL_PAIRS:
        if target.value in EXPECTED_MACHINE[current.value]:
            continue
        # The machine is checked before the caller's rights: the admin and the referrer both see it.
        for who in ("admin", "ref_d1"):
            with subtests.test(msg=f"{current}->{target} as {who}"):
                response = post_status(cases.client, as_[who], case_at[current], target, COMMENT)
                body = assert_problem(response, 409)
                assert body["allowed"] == [s.value for s in workflow.TRANSITIONS[current]]
                assert set(body["allowed"]) == EXPECTED_MACHINE[current.value]
                assert (body["current"], body["requested"]) == (current.value, target.value)
                assert cases.status(case_at[current]) == current.value


# --- legal transitions: the right actor only -----------------------------------------------------

# (from, to, comment, actors refused with 403, the actor who may; None: no user may)
WHO_MAY: list[tuple[str, str, str | None, tuple[str, ...], str | None]] = [
    ("draft", "submitted", None, ("fadm_d1",), "ref_d1b"),
    ("submitted", "triaged", None, ("ref_d1", "rad_c1", "fadm_c1", "admin"), None),
    ("submitted", "in_review", None, ("ref_d1", "fadm_c1", "fadm_d1", "admin"), "rad2_c1"),
    ("triaged", "in_review", None, ("ref_d1", "fadm_c1", "admin"), "rad_c1"),
    ("in_review", "needs_info", COMMENT, ("rad2_c1", "ref_d1", "fadm_c1", "admin"), "rad_c1"),
    ("in_review", "concluded", None, ("rad_c1", "rad2_c1", "ref_d1", "fadm_c1", "admin"), None),
    ("needs_info", "in_review", "Done", ("rad2_c1", "fadm_c1", "fadm_d1", "admin"), "ref_d1"),
    ("needs_info", "in_review", "Got it", (), "rad_c1"),
    ("concluded", "closed", None, ("rad2_c1", "fadm_c1", "fadm_d1"), "rad_c1"),
    ("concluded", "closed", None, (), "ref_d1b"),
    ("concluded", "closed", None, (), "admin"),
]


def test_legal_transition_by_the_wrong_actor_is_403(cases: Cases, as_: Actors, subtests: Any) -> None:
    """Each row on a fresh case: the refused get 403 and change nothing, then the right actor moves it."""
    for current, target, comment, refused, allowed in WHO_MAY:
        with subtests.test(msg=f"{current}->{target} by {allowed}"):
            check_who_may(cases, as_, current, target, comment, refused, allowed)


def check_who_may(
    cases: Cases,
    as_: Actors,
    current: str,
    target: str,
    comment: str | None,
    refused: tuple[str, ...],
    allowed: str | None,
) -> None:
    case_id = cases.at(current)
    for who in refused:
        case = cases.client.get(f"{API}/cases/{case_id}", headers=as_[who]).json()
        assert target not in case["allowed_transitions"], who
        assert_problem(post_status(cases.client, as_[who], case_id, target, comment), 403)
        assert cases.status(case_id) == current, f"{who} moved the case"
    if allowed is None:
        return
    assert (
        target
        in cases.client.get(f"{API}/cases/{case_id}", headers=as_[allowed]).json()["allowed_transitions"]
    )
    response = post_status(cases.client, as_[allowed], case_id, target, comment)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == target
    timeline = cases.client.get(f"{API}/cases/{case_id}/timeline", headers=as_["admin"]).json()
    last = [e for e in timeline if e["type"] == "status_changed"][-1]
    assert (last["from_status"], last["to_status"]) == (current, target)
    assert last["actor"] == f"user:{cases.network.uid(allowed)}"
    assert last["text"] == (comment or "")


def test_needs_info_both_ways_needs_a_comment(cases: Cases, as_: Actors, subtests: Any) -> None:
    case_at = {status: cases.at(status) for status in ("in_review", "needs_info")}
    for current, target, actor in (
        ("in_review", "needs_info", "rad_c1"),
        ("needs_info", "in_review", "ref_d1"),
    ):
        for comment in (None, "", "   "):
            with subtests.test(msg=f"{current}->{target} comment={comment!r}"):
                response = post_status(cases.client, as_[actor], case_at[current], target, comment)
                assert_problem(response, 422)
                assert cases.status(case_at[current]) == current


def test_submission_sets_a_deadline_from_the_urgency(cases: Cases, as_: Actors, network: Network) -> None:
    routine = new_case(cases.client, as_["ref_d1"], network.fid("C1"))
    urgent = new_case(cases.client, as_["ref_d1"], network.fid("C1"), urgent=True)
    a = move(cases.client, as_["ref_d1"], routine["id"], "submitted")
    b = move(cases.client, as_["ref_d1"], urgent["id"], "submitted")
    assert a["deadline"]
    assert b["deadline"]
    assert b["priority"] == "urgent"
    assert b["deadline"] < a["deadline"]
    # The most urgent case heads the specialist's worklist.
    worklist = cases.client.get(f"{API}/cases", headers=as_["rad_c1"]).json()["items"]
    assert [c["id"] for c in worklist] == [urgent["id"], routine["id"]]


# --- concluded and triaged are not for users to set ---------------------------------------------


def test_concluded_only_by_signing_an_opinion(cases: Cases, as_: Actors) -> None:
    case_id = cases.at("in_review")
    refused = assert_problem(post_status(cases.client, as_["rad_c1"], case_id, "concluded"), 403)
    assert "sign" in refused["detail"]
    view = cases.client.get(f"{API}/cases/{case_id}", headers=as_["rad_c1"]).json()
    assert "concluded" not in view["allowed_transitions"]
    assert view["status"] == "in_review"

    signed = cases.sign(case_id, cases.opinion(case_id))
    assert signed.status_code == 200, signed.text
    concluded = cases.client.get(f"{API}/cases/{case_id}", headers=as_["ref_d1"]).json()
    assert concluded["status"] == "concluded"
    assert concluded["concluded_at"] is not None
    timeline = cases.client.get(f"{API}/cases/{case_id}/timeline", headers=as_["ref_d1"]).json()
    types = [e["type"] for e in timeline]
    assert types[-2:] == ["opinion_signed", "status_changed"]
    assert timeline[-1]["to_status"] == "concluded"


def test_triaged_never_by_a_user(cases: Cases, as_: Actors, network: Network, client: TestClient) -> None:
    case_id = cases.at("submitted")
    key = client.post(
        f"{API}/facilities/{network.fid('D1')}/api-keys", json={"name": "gw"}, headers=as_["fadm_d1"]
    ).json()["key"]
    viewers: dict[str, dict[str, str]] = {
        name: as_[name] for name in ("admin", "ref_d1", "ref_d1b", "rad_c1", "rad2_c1", "fadm_c1", "fadm_d1")
    }
    viewers["api key"] = {"X-API-Key": key}
    for who, headers in viewers.items():
        response = post_status(client, headers, case_id, "triaged")
        assert response.status_code == 403, f"{who}: {response.text}"
    assert cases.status(case_id) == "submitted"

    cases.triage(case_id)
    assert cases.status(case_id) == "triaged"
    last = client.get(f"{API}/cases/{case_id}/timeline", headers=as_["admin"]).json()[-1]
    assert (last["actor"], last["to_status"]) == ("system", "triaged")


# --- opinions ------------------------------------------------------------------------------------


def opinion_url(case_id: str, opinion_id: str, suffix: str = "") -> str:
    return f"{API}/cases/{case_id}/opinions/{opinion_id}{suffix}"


def test_signed_opinion_is_immutable_and_takes_addenda(cases: Cases, as_: Actors, client: TestClient) -> None:
    case_id = cases.at("in_review")
    opinion_id = cases.opinion(case_id)
    signed = cases.sign(case_id, opinion_id).json()
    assert signed["status"] == "signed"
    assert signed["signed_at"]
    assert len(signed["content_sha256"]) == 64
    rad = as_["rad_c1"]

    edit = client.patch(opinion_url(case_id, opinion_id), json={"impression": "Changed my mind"}, headers=rad)
    assert_problem(edit, 409)
    assert_problem(cases.sign(case_id, opinion_id), 409)
    after = client.get(opinion_url(case_id, opinion_id), headers=rad).json()
    for field in ("findings", "impression", "recommendations", "signed_at", "content_sha256"):
        assert after[field] == signed[field], field

    # Addenda: the author, and another specialist assigned to the case; nobody else.
    assign = client.post(
        f"{API}/cases/{case_id}/assignments", json={"user_id": cases.network.uid("rad2_c1")}, headers=rad
    )
    assert assign.status_code == 201, assign.text
    for who, text in (("rad_c1", "Follow-up CT in 6 weeks"), ("rad2_c1", "Agree")):
        response = client.post(
            opinion_url(case_id, opinion_id, "/addenda"), json={"text": text}, headers=as_[who]
        )
        assert response.status_code == 201, response.text
    for who in ("ref_d1", "fadm_c1", "admin"):
        response = client.post(
            opinion_url(case_id, opinion_id, "/addenda"), json={"text": "x"}, headers=as_[who]
        )
        assert_problem(response, 403)

    final = client.get(opinion_url(case_id, opinion_id), headers=as_["ref_d1"]).json()
    assert [a["text"] for a in final["addenda"]] == ["Follow-up CT in 6 weeks", "Agree"]
    assert [a["author_id"] for a in final["addenda"]] == [cases.network.uid(u) for u in ("rad_c1", "rad2_c1")]
    assert final["content_sha256"] == signed["content_sha256"]
    timeline = client.get(f"{API}/cases/{case_id}/timeline", headers=as_["ref_d1"]).json()
    assert [e["text"] for e in timeline if e["type"] == "addendum"] == ["Follow-up CT in 6 weeks", "Agree"]


def test_drafts_are_hidden_from_all_but_the_cases_specialists(
    cases: Cases, as_: Actors, client: TestClient
) -> None:
    case_id = cases.at("in_review")
    opinion_id = cases.opinion(case_id)
    for who in ("ref_d1", "ref_d1b", "fadm_d1", "fadm_c1", "rad2_c1", "admin"):
        assert client.get(f"{API}/cases/{case_id}/opinions", headers=as_[who]).json() == [], who
        assert_problem(client.get(opinion_url(case_id, opinion_id), headers=as_[who]), 404)
    # Addenda are for signed opinions; a draft is edited instead.
    response = client.post(
        opinion_url(case_id, opinion_id, "/addenda"), json={"text": "x"}, headers=as_["rad_c1"]
    )
    assert_problem(response, 409)
    # Once assigned, a second specialist reads the draft too.
    client.post(
        f"{API}/cases/{case_id}/assignments",
        json={"user_id": cases.network.uid("rad2_c1")},
        headers=as_["rad_c1"],
    )
    listed = client.get(f"{API}/cases/{case_id}/opinions", headers=as_["rad2_c1"]).json()
    assert [o["id"] for o in listed] == [opinion_id]
    # After signing, every viewer of the case sees it.
    assert cases.sign(case_id, opinion_id).status_code == 200
    listed = client.get(f"{API}/cases/{case_id}/opinions", headers=as_["ref_d1"]).json()
    assert [o["id"] for o in listed] == [opinion_id]


def test_only_the_author_edits_and_signs(cases: Cases, as_: Actors, client: TestClient) -> None:
    case_id = cases.at("in_review")
    opinion_id = cases.opinion(case_id)
    client.post(
        f"{API}/cases/{case_id}/assignments",
        json={"user_id": cases.network.uid("rad2_c1")},
        headers=as_["fadm_c1"],
    )
    other = as_["rad2_c1"]  # assigned, so the draft is visible, but not the author
    assert_problem(
        client.patch(opinion_url(case_id, opinion_id), json={"impression": "x"}, headers=other), 403
    )
    assert_problem(cases.sign(case_id, opinion_id, "rad2_c1"), 403)
    assert cases.status(case_id) == "in_review"
    # The second specialist writes an opinion of their own instead.
    own = cases.opinion(case_id, "rad2_c1", impression="Agree: pneumonia")
    edit = client.patch(opinion_url(case_id, own), json={"recommendations": "Antibiotics"}, headers=other)
    assert edit.status_code == 200, edit.text
    assert edit.json()["recommendations"] == "Antibiotics"
    assert cases.sign(case_id, opinion_id).status_code == 200
    assert cases.status(case_id) == "concluded"


def test_opinion_rules_on_status_and_content(cases: Cases, as_: Actors, client: TestClient) -> None:
    case_id = cases.at("in_review")
    empty = cases.opinion(case_id, findings="", impression="   ", recommendations="Rest")
    assert_problem(cases.sign(case_id, empty), 409)  # nothing to sign
    move(client, as_["rad_c1"], case_id, "needs_info", COMMENT)
    written = client.post(f"{API}/cases/{case_id}/opinions", json={"impression": "x"}, headers=as_["rad_c1"])
    assert_problem(written, 409)  # opinions are written while in_review
    client.patch(opinion_url(case_id, empty), json={"impression": "Pneumonia"}, headers=as_["rad_c1"])
    assert_problem(cases.sign(case_id, empty), 409)  # and signed while in_review
    assert cases.status(case_id) == "needs_info"
    # Specialists who are not assigned do not write opinions.
    other = cases.at("submitted")
    response = client.post(f"{API}/cases/{other}/opinions", json={"impression": "x"}, headers=as_["rad2_c1"])
    assert_problem(response, 403)


# --- assignment ---------------------------------------------------------------------------------


def assignments(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(CaseAssignment)) or 0)


def assign(client: TestClient, headers: dict[str, str], case_id: str, user_id: str) -> httpx.Response:
    return client.post(f"{API}/cases/{case_id}/assignments", json={"user_id": user_id}, headers=headers)


# (kind of case, assignee, expected status)
ASSIGNEES: list[tuple[str, str, int]] = [
    ("imaging", "rad2_c1", 201),
    ("imaging", "path_c1", 422),  # wrong specialty
    ("imaging", "rad_c2", 422),  # right specialty, another facility
    ("imaging", "fadm_c1", 422),  # not a specialist
    ("imaging", "ml_c1", 422),
    ("imaging", "ref_d1", 422),
    ("imaging", "admin", 422),
    ("imaging", "unknown", 422),
    ("pathology", "path_c1", 201),
    ("pathology", "rad2_c1", 422),
    ("advice", "path_c1", 201),  # advice and clinical consults suit every specialist
    ("advice", "rad2_c1", 201),
    ("clinical", "path_c1", 201),
]


def test_assignee_must_be_a_fitting_specialist_of_the_target(
    cases: Cases, as_: Actors, client: TestClient, session_factory: sessionmaker[Session], subtests: Any
) -> None:
    by_kind = {kind: cases.at("submitted", kind) for kind in {k for k, _, _ in ASSIGNEES}}
    for kind, assignee, expected in ASSIGNEES:
        with subtests.test(msg=f"{kind} <- {assignee}"):
            case_id = by_kind[kind]
            user_id = cases.network.uid(assignee) if assignee != "unknown" else str(uuid.uuid4())
            before = assignments(session_factory)
            response = assign(client, as_["fadm_c1"], case_id, user_id)
            if expected == 201:
                assert response.status_code == 201, response.text
                assert user_id in response.json()["assigned_user_ids"]
                assert assignments(session_factory) == before + 1
            else:
                assert_problem(response, expected)
                assert assignments(session_factory) == before


def test_deactivated_specialist_cannot_be_assigned(
    cases: Cases, as_: Actors, client: TestClient, network: Network
) -> None:
    case_id = cases.at("submitted")
    off = client.patch(
        f"{API}/users/{network.uid('rad2_c1')}", json={"is_active": False}, headers=as_["fadm_c1"]
    )
    assert off.status_code == 200, off.text
    assert_problem(assign(client, as_["fadm_c1"], case_id, network.uid("rad2_c1")), 422)


def test_assignment_bookkeeping(
    cases: Cases, as_: Actors, client: TestClient, network: Network, session_factory: sessionmaker[Session]
) -> None:
    rad2 = network.uid("rad2_c1")
    # Taking a case assigns the taker.
    taken = move(client, as_["rad_c1"], cases.at("submitted"), "in_review")
    assert taken["assigned_user_ids"] == [network.uid("rad_c1")]
    case_id = str(taken["id"])
    # Assigning twice is harmless.
    assert assign(client, as_["rad_c1"], case_id, rad2).status_code == 201
    again = assign(client, as_["rad_c1"], case_id, rad2)
    assert again.status_code == 201
    assert again.json()["assigned_user_ids"].count(rad2) == 1
    # The assignee may step down; a second removal finds nothing.
    gone = client.delete(f"{API}/cases/{case_id}/assignments/{rad2}", headers=as_["rad2_c1"])
    assert gone.status_code == 200, gone.text
    assert rad2 not in gone.json()["assigned_user_ids"]
    assert_problem(client.delete(f"{API}/cases/{case_id}/assignments/{rad2}", headers=as_["fadm_c1"]), 404)
    # Drafts and closed cases take no assignments.
    for status in ("draft", "closed"):
        case_at_status = cases.at(status)
        before = assignments(session_factory)
        assert_problem(assign(client, as_["admin"], case_at_status, rad2), 409)
        assert assignments(session_factory) == before
    events = client.get(f"{API}/cases/{case_id}/timeline", headers=as_["admin"]).json()
    assert [e["type"] for e in events if e["type"] in ("assigned", "unassigned")] == [
        "assigned",
        "assigned",
        "unassigned",
    ]


# --- editing the case follows the status ---------------------------------------------------------


def test_referrer_edits_only_drafts_and_cases_needing_info(cases: Cases, as_: Actors, subtests: Any) -> None:
    for status in CaseStatus:
        with subtests.test(msg=status.value):
            case_id = cases.at(status.value)
            response = cases.client.patch(
                f"{API}/cases/{case_id}", json={"clinical_notes": "New history"}, headers=as_["ref_d1"]
            )
            if status in (S.draft, S.needs_info):
                assert response.status_code == 200, response.text
                assert response.json()["clinical_notes"] == "New history"
            else:
                assert_problem(response, 409)
