"""The role x facility access matrix: every route under /api/v1, every principal, several records.

One world is built through the API (cases in several statuses, an opinion draft, a signed opinion,
an attachment, a facility API key, a slide, AI findings, video sessions, a DICOM node, a training
export, model versions in the registry); every request of the matrix then runs against that same world:
after a request that changed something the SQLite file is restored from a snapshot, so each row of
the matrix is independent of the rows before it.

The expectations are written as data from the rules of ``consult_api/access.py`` (who sees which
case) and of the services (who may do what to a visible record), not derived from the code:

* invisible records answer 404, visible records the caller may not touch answer 403;
* no credentials answer 401 with a ``WWW-Authenticate`` header;
* lists hold exactly the records the caller may see.

A route that exists but is missing from ``ROUTES`` fails ``test_every_api_route_is_in_the_matrix``.
"""

from __future__ import annotations

import io
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from consult_api.access import Role
from consult_api.config import Settings
from consult_api.findings.models import Finding
from models.registry import ModelRegistry
from tests.conftest import PASSWORD, USERS, Actors, Network, move, new_case
from tests.consult_api.slides.conftest import upload_slide
from tests.consult_api.triage.conftest import classifier_onnx, ct_card

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"

KEY = "key_d1"  # an upload gateway's API key issued to D1
ANON = "anonymous"  # no credentials at all
PRINCIPALS: tuple[str, ...] = (*USERS, KEY, ANON)

# The cases of the world (all D1 -> C1 unless said otherwise).
DRAFT = "draft"  # imaging, never submitted
SUBMITTED = "submitted"  # imaging, submitted
PATHOLOGY = "pathology"  # pathology, submitted
IN_REVIEW = "in_review"  # imaging, taken by rad_c1, a draft opinion by rad_c1, an attachment by ref_d1
CONCLUDED = "concluded"  # imaging, taken by rad_c1, opinion signed
OTHER = "other"  # imaging D2 -> C2, submitted: the unrelated referral pair
MISSING = "missing"  # an id that does not exist

ALL_CASES = frozenset({DRAFT, SUBMITTED, PATHOLOGY, IN_REVIEW, CONCLUDED, OTHER})
D1_CASES = frozenset({DRAFT, SUBMITTED, PATHOLOGY, IN_REVIEW, CONCLUDED})
C1_IMAGING = frozenset({SUBMITTED, IN_REVIEW, CONCLUDED})

VISIBLE_CASES: dict[str, frozenset[str]] = {
    "admin": ALL_CASES,
    # Referrers (and the facility's API key) see all their facility's cases, drafts included.
    "ref_d1": D1_CASES,
    "ref_d1b": D1_CASES,
    KEY: D1_CASES,
    "ref_d2": frozenset({OTHER}),
    # Specialists: non-draft cases targeted at their facility, of a kind their specialty covers.
    "rad_c1": C1_IMAGING,
    "rad2_c1": C1_IMAGING,
    "path_c1": frozenset({PATHOLOGY}),
    "rad_c2": frozenset({OTHER}),
    # Facility admins: cases referred from their facility, and non-draft cases referred to it.
    "fadm_d1": D1_CASES,
    "fadm_c1": frozenset({SUBMITTED, PATHOLOGY, IN_REVIEW, CONCLUDED}),
    "fadm_d2": frozenset({OTHER}),
    "ml_c1": frozenset(),
    ANON: frozenset(),
}

D1_REFERRERS = ("ref_d1", "ref_d1b", KEY)
FACILITY_OF = {username: code for username, (code, _) in USERS.items()}
FACILITY_ADMIN_OF = {
    username: code for username, (code, roles) in USERS.items() if Role.facility_admin in roles
}

OK, CREATED, ACCEPTED, NO_CONTENT = 200, 201, 202, 204
FORBIDDEN, NOT_FOUND, CONFLICT, UNPROCESSABLE = 403, 404, 409, 422


@dataclass
class World:
    client: TestClient
    network: Network
    headers: dict[str, dict[str, str]]
    cases: dict[str, str]
    opinions: dict[str, str]  # case name -> the opinion of that case (draft or signed)
    attachment_id: str
    key_id: str
    slides: dict[str, str]  # case name -> the slide on that case (only PATHOLOGY has one)
    findings: dict[str, str]  # case name -> the AI finding on that case
    sessions: dict[str, str]  # case name -> the video session on that case
    node_id: str  # a DICOM node of D1
    export_id: str
    dicom: bytes  # one CT instance, Part-10
    missing_id: str
    db_path: str
    snapshot: sqlite3.Connection

    def case_id(self, name: str) -> str:
        return self.cases.get(name, self.missing_id)

    def user_id(self, name: str) -> str:
        return self.network.uid(name) if name in USERS else self.missing_id

    def facility_id(self, code: str) -> str:
        return self.network.fid(code) if code in self.network.facilities else self.missing_id

    def restore(self) -> None:
        """Put the database back exactly as it was when the world was built."""
        target = sqlite3.connect(self.db_path)
        try:
            self.snapshot.backup(target)
        finally:
            target.close()


# ---------------------------------------------------------------------------------------------
# Who may do what: small rule helpers over the tables above.
# ---------------------------------------------------------------------------------------------

Expect = Callable[[str, str], int]  # (principal, target) -> expected status code


def manages(principal: str, facility: str) -> bool:
    return principal == "admin" or FACILITY_ADMIN_OF.get(principal) == facility


def sees_user(principal: str, username: str) -> bool:
    return username in USERS and (principal == username or manages(principal, FACILITY_OF[username]))


def on_case(outcomes: dict[str, dict[str, int]] | None = None, *, visible: int = FORBIDDEN) -> Expect:
    """404 for cases the principal may not see; for visible ones ``outcomes[case][principal]``,
    else ``outcomes[case]["*"]``, else ``visible``."""
    table = outcomes or {}

    def expect(principal: str, case: str) -> int:
        if case not in VISIBLE_CASES[principal]:
            return NOT_FOUND
        row = table.get(case, {})
        return row.get(principal, row.get("*", visible))

    return expect


def everyone(code: int) -> Expect:
    return lambda _principal, _target: code


def only(allowed: Callable[[str, str], bool], code: int, *, otherwise: int = FORBIDDEN) -> Expect:
    return lambda principal, target: code if allowed(principal, target) else otherwise


def facility_rule(allowed: Callable[[str, str], bool], code: int, missing: int = NOT_FOUND) -> Expect:
    def expect(principal: str, facility: str) -> int:
        if facility == MISSING:
            return missing
        return code if allowed(principal, facility) else FORBIDDEN

    return expect


def users_only(code: int) -> Expect:
    return lambda principal, _target: code if principal in USERS else FORBIDDEN


def user_record(code: int, *, needs_manager: bool) -> Expect:
    def expect(principal: str, username: str) -> int:
        if not sees_user(principal, username):
            return NOT_FOUND
        if needs_manager and not manages(principal, FACILITY_OF[username]):
            return FORBIDDEN
        return code

    return expect


def new_case_rule(principal: str, target: str) -> int:
    may_refer = {"C1": D1_REFERRERS, "C2": ("ref_d2",)}[target]
    if principal in may_refer:
        return CREATED
    if principal in ("ref_d1", "ref_d1b", KEY, "ref_d2", "admin"):
        return UNPROCESSABLE  # may create cases, but has no referral link to that facility
    return FORBIDDEN


# ---------------------------------------------------------------------------------------------
# Response checks for lists and other bodies: the ids a caller gets back are exactly those it may see.
# ---------------------------------------------------------------------------------------------

Check = Callable[[World, str, str, httpx.Response], str | None]
CASE_FILTERS: dict[str, tuple[Callable[[World], dict[str, Any]], frozenset[str]]] = {
    "all": (lambda w: {}, ALL_CASES),
    "status=draft": (lambda w: {"status": "draft"}, frozenset({DRAFT})),
    "kind=pathology": (lambda w: {"kind": "pathology"}, frozenset({PATHOLOGY})),
    "referring=D2": (lambda w: {"referring_facility_id": w.facility_id("D2")}, frozenset({OTHER})),
    "target=C1": (lambda w: {"target_facility_id": w.facility_id("C1")}, D1_CASES),
}


def _diff(what: str, got: set[str], want: set[str]) -> str | None:
    if got == want:
        return None
    return f"{what}: unexpected {sorted(got - want)}, missing {sorted(want - got)}"


def check_case_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    names = CASE_FILTERS[target][1] & VISIBLE_CASES[principal]
    want = {w.cases[n] for n in names}
    body = response.json()
    got = {item["id"] for item in body["items"]}
    if body["total"] != len(want):
        return f"total {body['total']} != {len(want)}"
    return _diff("case ids", got, want)


def users_seen(principal: str, facility: str | None) -> set[str]:
    if principal == "admin":
        seen = set(USERS)
    elif principal in FACILITY_ADMIN_OF:
        seen = {u for u in USERS if FACILITY_OF[u] == FACILITY_ADMIN_OF[principal]}
    elif principal in USERS:
        seen = {principal}
    else:
        seen = set()
    return {u for u in seen if facility is None or FACILITY_OF[u] == facility}


def check_user_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    facility = None if target == "all" else target
    want = {w.user_id(u) for u in users_seen(principal, facility)}
    return _diff("user ids", {u["id"] for u in response.json()}, want)


def check_opinion_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    want: set[str] = set()
    if target == CONCLUDED:
        want = {w.opinions[CONCLUDED]}  # signed: every viewer of the case sees it
    elif target == IN_REVIEW and principal == "rad_c1":
        want = {w.opinions[IN_REVIEW]}  # a draft: only its author and the case's assigned specialists
    return _diff("opinion ids", {o["id"] for o in response.json()}, want)


def check_timeline(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    foreign = {e["case_id"] for e in response.json()} - {w.case_id(target)}
    return f"events of other cases: {sorted(foreign)}" if foreign else None


def check_facility_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    want = {f.id for f in w.network.facilities.values()}
    return _diff("facility ids", {f["id"] for f in response.json()}, want)


def check_key_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    body = response.json()
    if any("key" in k for k in body):
        return "an API key secret is listed"
    want = {w.key_id} if target == "D1" else set()
    return _diff("api key ids", {k["id"] for k in body}, want)


def check_attachment(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    return None if response.content == ATTACHMENT else "attachment bytes differ"


def check_slide_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    """``target`` is "all" (GET /slides) or the case whose slides are listed."""
    names = VISIBLE_CASES[principal] & (set(w.slides) if target == "all" else {target})
    want = {w.slides[n] for n in names if n in w.slides}
    body = response.json()
    if body["total"] != len(want):
        return f"total {body['total']} != {len(want)}"
    return _diff("slide ids", {s["id"] for s in body["items"]}, want)


def of_case(records: Callable[[World], dict[str, str]]) -> Check:
    """The list holds exactly the records the world put on that case (none of any other case)."""

    def check(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
        body = response.json()
        foreign = {r["case_id"] for r in body} - {w.case_id(target)}
        if foreign:
            return f"records of other cases: {sorted(foreign)}"
        want = {records(w)[target]} if target in records(w) else set()
        return _diff("ids", {r["id"] for r in body}, want)

    return check


def check_node_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    want = {w.node_id} if target == "D1" else set()
    return _diff("DICOM node ids", {n["id"] for n in response.json()}, want)


def check_model_list(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    got = {f"{m['name']}@{m['version']}": m["state"] for m in response.json()}
    want = {ACTIVE_MODEL: "live", CANDIDATE_MODEL: "candidate"}
    return None if got == want else f"model versions {got} != {want}"


def check_no_studies(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    body = response.json()
    return None if body == [] else f"studies on a case that has none: {body}"  # no DICOM in the world


def check_png(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    if response.headers.get("content-type") != "image/png" or response.content[:8] != b"\x89PNG\r\n\x1a\n":
        return "not a PNG"
    return None


def check_jpeg(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    if response.headers.get("content-type") != "image/jpeg" or response.content[:2] != b"\xff\xd8":
        return "not a JPEG"
    return None


def check_pdf(w: World, principal: str, target: str, response: httpx.Response) -> str | None:
    return None if response.content.startswith(b"%PDF") else "not a PDF"


# ---------------------------------------------------------------------------------------------
# The routes. ``path`` is the route template exactly as the app declares it.
# ---------------------------------------------------------------------------------------------

Params = Callable[[World, str], dict[str, str]]
Body = Callable[[World, str], dict[str, Any]]
ATTACHMENT = b"prior CT report, 2025: no abnormality\n"


def case_params(w: World, target: str) -> dict[str, str]:
    return {
        "case_id": w.case_id(target),
        # Cases without an opinion get the in-review draft's id: an opinion of another case.
        "opinion_id": w.opinions.get(target, w.opinions[IN_REVIEW]),
        "event_id": w.attachment_id,
        "user_id": w.user_id("rad_c2" if target == OTHER else "rad_c1"),
    }


def user_params(w: World, target: str) -> dict[str, str]:
    return {"user_id": w.user_id(target)}


def facility_params(w: World, target: str) -> dict[str, str]:
    return {"facility_id": w.facility_id(target), "key_id": w.key_id, "node_id": w.node_id}


def finding_params(w: World, target: str) -> dict[str, str]:
    # Cases without a finding get SUBMITTED's: a finding of another case.
    return {**case_params(w, target), "finding_id": w.findings.get(target, w.findings[SUBMITTED])}


def slide_params(w: World, target: str) -> dict[str, str]:
    # The DeepZoom tile 0/0_0 exists in every slide; "label" is a PHI associated image of the SVS.
    return {
        "slide_id": w.slides.get(target, w.missing_id),
        "level": "0",
        "col": "0",
        "row": "0",
        "name": "label",
    }


def session_params(w: World, target: str) -> dict[str, str]:
    return {"session_id": w.sessions.get(target, w.missing_id), "name": target}


def export_params(w: World, target: str) -> dict[str, str]:
    return {"export_id": w.export_id if target == EXPORT else "training-20000101T000000Z"}


def model_params(_w: World, target: str) -> dict[str, str]:
    name, _, version = target.partition("@")
    return {"name": name, "version": version}


def no_params(_w: World, _target: str) -> dict[str, str]:
    return {}


def no_body(_w: World, _target: str) -> dict[str, Any]:
    return {}


def json_body(payload: dict[str, Any]) -> Body:
    return lambda _w, _target: {"json": payload}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    targets: tuple[str, ...]
    expect: Expect
    params: Params = no_params
    body: Body = no_body
    check: Check | None = None
    public: bool = False  # answers without credentials


CASE_TARGETS = (DRAFT, SUBMITTED, PATHOLOGY, IN_REVIEW, CONCLUDED, OTHER, MISSING)
USER_TARGETS = ("ref_d1", "rad_c1", "fadm_c1", "ref_d2", "admin", MISSING)
ASSIGNEE = {PATHOLOGY: "path_c1", OTHER: "rad_c2"}  # the rest: rad2_c1
NEXT_STATUS = {
    DRAFT: {"status": "submitted"},
    SUBMITTED: {"status": "in_review"},
    PATHOLOGY: {"status": "in_review"},
    IN_REVIEW: {"status": "needs_info", "comment": "Please send the prior report"},
    CONCLUDED: {"status": "closed"},
    OTHER: {"status": "in_review"},
    MISSING: {"status": "in_review"},
}
C1_ASSIGNERS = ("fadm_c1", "admin")  # the target facility's administrators, and the admin
C1_RADIOLOGISTS = ("rad_c1", "rad2_c1")
ML = ("ml_c1", "admin")  # training exports, model agreement and re-triage
EXPORT = "export"  # the training export ml_c1 made; the other target is a well-formed unknown id
ACTIVE_MODEL, CANDIDATE_MODEL, MISSING_MODEL = "ct-dense@1.0.0", "ct-dense@2.0.0", "ct-dense@9.9.9"
SESSION_TARGETS = (IN_REVIEW, OTHER, MISSING)  # the session on IN_REVIEW, on OTHER, an unknown id
# Sessions: IN_REVIEW's opened by rad_c1 (its host) with ref_d1 invited; OTHER's by rad_c2 alone.
SESSION_HOSTS = {IN_REVIEW: "rad_c1", OTHER: "rad_c2"}
SESSION_INVITED = {IN_REVIEW: ("rad_c1", "ref_d1"), OTHER: ("rad_c2",)}
SESSION_INVITEE = {IN_REVIEW: "rad2_c1", OTHER: "ref_d2"}  # can see the case, not yet invited


def hosts(code: int) -> Expect:
    """The session's host or the admin; others who see the case 403, the rest 404."""
    return on_case({case: {host: code, "admin": code} for case, host in SESSION_HOSTS.items()})


def invited(code: int) -> Expect:
    """Participants of the session; others who see the case 403 (the admin too), the rest 404."""
    return on_case({case: dict.fromkeys(users, code) for case, users in SESSION_INVITED.items()})


def reviewers(code: int) -> Expect:
    """Findings are reviewed by the target facility's specialists for the case kind, while it is open."""
    return on_case(
        {
            SUBMITTED: dict.fromkeys(C1_RADIOLOGISTS, code),
            PATHOLOGY: {"path_c1": code},
            IN_REVIEW: dict.fromkeys(C1_RADIOLOGISTS, code),
            CONCLUDED: dict.fromkeys(C1_RADIOLOGISTS, CONFLICT),
            OTHER: {"rad_c2": code},
        }
    )


def ml_only(found: Callable[[str], int]) -> Expect:
    """ML engineers and the admin get ``found(target)``; everyone else 403, before any lookup."""
    return lambda p, t: found(t) if p in ML else FORBIDDEN


ROUTES: tuple[Route, ...] = (
    # --- auth --------------------------------------------------------------------------------
    Route(
        "POST",
        "/api/v1/auth/token",
        ("ref_d1",),
        everyone(OK),
        body=lambda _w, t: {"data": {"username": t, "password": PASSWORD}},
        public=True,
    ),
    # --- users -------------------------------------------------------------------------------
    Route(
        "POST",
        "/api/v1/users",
        ("D1", "C1"),
        only(manages, CREATED),
        body=lambda w, t: {
            "json": {
                "username": f"new_{t.lower()}",
                "full_name": "New User",
                "password": PASSWORD,
                "facility_id": w.facility_id(t),
                "roles": ["referrer"],
            }
        },
    ),
    Route(
        "GET",
        "/api/v1/users",
        ("all", "C1"),
        everyone(OK),
        body=lambda w, t: {} if t == "all" else {"params": {"facility_id": w.facility_id(t)}},
        check=check_user_list,
    ),
    Route("GET", "/api/v1/users/me", ("me",), users_only(OK)),
    Route(
        "POST",
        "/api/v1/users/me/password",
        ("me",),
        users_only(NO_CONTENT),
        body=json_body({"current_password": PASSWORD, "new_password": "a different long password"}),
    ),
    Route("GET", "/api/v1/users/{user_id}", USER_TARGETS, user_record(OK, needs_manager=False), user_params),
    Route(
        "PATCH",
        "/api/v1/users/{user_id}",
        USER_TARGETS,
        user_record(OK, needs_manager=True),
        user_params,
        json_body({"full_name": "Renamed Person"}),
    ),
    # --- facilities --------------------------------------------------------------------------
    Route(
        "POST",
        "/api/v1/facilities",
        ("NEW1",),
        only(lambda p, _t: p == "admin", CREATED),
        body=lambda _w, t: {"json": {"code": t, "name": "New Facility", "tier": "district"}},
    ),
    Route("GET", "/api/v1/facilities", ("all",), everyone(OK), check=check_facility_list),
    Route(
        "GET",
        "/api/v1/facilities/{facility_id}",
        ("D1", "C2", MISSING),
        lambda _p, t: NOT_FOUND if t == MISSING else OK,
        facility_params,
    ),
    Route(
        "PATCH",
        "/api/v1/facilities/{facility_id}",
        ("D1", "C1", MISSING),
        facility_rule(manages, OK),
        facility_params,
        json_body({"name": "Renamed Facility"}),
    ),
    Route(
        "PUT",
        "/api/v1/facilities/{facility_id}/referrals",
        ("D1", "D2"),
        only(lambda p, _t: p == "admin", OK),
        facility_params,
        lambda w, _t: {"json": {"facility_ids": [w.facility_id("C1"), w.facility_id("C2")]}},
    ),
    Route(
        "POST",
        "/api/v1/facilities/{facility_id}/api-keys",
        ("D1", "C1", MISSING),
        facility_rule(manages, CREATED),
        facility_params,
        json_body({"name": "second gateway"}),
    ),
    Route(
        "GET",
        "/api/v1/facilities/{facility_id}/api-keys",
        ("D1", "C1", MISSING),
        facility_rule(manages, OK),
        facility_params,
        check=check_key_list,
    ),
    Route(
        "DELETE",
        "/api/v1/facilities/{facility_id}/api-keys/{key_id}",
        ("D1", "C1"),
        # The key belongs to D1: revoking it through C1's path finds nothing.
        lambda p, t: FORBIDDEN if not manages(p, t) else (OK if t == "D1" else NOT_FOUND),
        facility_params,
    ),
    # --- cases -------------------------------------------------------------------------------
    Route(
        "POST",
        "/api/v1/cases",
        ("C1", "C2"),
        new_case_rule,
        body=lambda w, t: {
            "json": {
                "kind": "imaging",
                "target_facility_id": w.facility_id(t),
                "patient": {"identifier": "P-1", "name": "Matrix Patient"},
                "clinical_question": "Matrix question",
            }
        },
    ),
    Route(
        "GET",
        "/api/v1/cases",
        tuple(CASE_FILTERS),
        everyone(OK),
        body=lambda w, t: {"params": CASE_FILTERS[t][0](w)},
        check=check_case_list,
    ),
    Route("GET", "/api/v1/cases/{case_id}", CASE_TARGETS, on_case(visible=OK), case_params),
    Route(
        "PATCH",
        "/api/v1/cases/{case_id}",
        CASE_TARGETS,
        # The referring facility (or the admin) edits, and only a draft (or a case needing info).
        on_case(
            {
                **{c: dict.fromkeys((*D1_REFERRERS, "admin"), CONFLICT) for c in D1_CASES - {DRAFT}},
                DRAFT: dict.fromkeys((*D1_REFERRERS, "admin"), OK),
                OTHER: dict.fromkeys(("ref_d2", "admin"), CONFLICT),
            }
        ),
        case_params,
        json_body({"clinical_notes": "More history"}),
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/status",
        CASE_TARGETS,
        on_case(
            {
                DRAFT: dict.fromkeys((*D1_REFERRERS, "admin"), OK),  # -> submitted
                SUBMITTED: dict.fromkeys(("rad_c1", "rad2_c1"), OK),  # -> in_review
                PATHOLOGY: {"path_c1": OK},  # -> in_review
                IN_REVIEW: {"rad_c1": OK},  # -> needs_info (the assigned specialist)
                CONCLUDED: dict.fromkeys((*D1_REFERRERS, "rad_c1", "admin"), OK),  # -> closed
                OTHER: {"rad_c2": OK},  # -> in_review
            }
        ),
        case_params,
        lambda _w, t: {"json": NEXT_STATUS[t]},
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/timeline",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=check_timeline,
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/comments",
        CASE_TARGETS,
        on_case(visible=CREATED),
        case_params,
        json_body({"text": "A comment"}),
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/assignments",
        CASE_TARGETS,
        on_case(
            {
                DRAFT: {"admin": CONFLICT},
                SUBMITTED: dict.fromkeys(("rad_c1", "rad2_c1", *C1_ASSIGNERS), CREATED),
                PATHOLOGY: dict.fromkeys(("path_c1", *C1_ASSIGNERS), CREATED),
                IN_REVIEW: dict.fromkeys(("rad_c1", "rad2_c1", *C1_ASSIGNERS), CREATED),
                CONCLUDED: dict.fromkeys(("rad_c1", "rad2_c1", *C1_ASSIGNERS), CREATED),
                OTHER: dict.fromkeys(("rad_c2", "admin"), CREATED),
            }
        ),
        case_params,
        lambda w, t: {"json": {"user_id": w.user_id(ASSIGNEE.get(t, "rad2_c1"))}},
    ),
    Route(
        "DELETE",
        "/api/v1/cases/{case_id}/assignments/{user_id}",
        CASE_TARGETS,
        # Removing rad_c1 (rad_c2 on OTHER): the assignee themselves or the target's administrators;
        # where that user is not assigned, an allowed caller finds no assignment.
        on_case(
            {
                DRAFT: {"admin": NOT_FOUND},
                SUBMITTED: dict.fromkeys(("rad_c1", *C1_ASSIGNERS), NOT_FOUND),
                PATHOLOGY: dict.fromkeys(C1_ASSIGNERS, NOT_FOUND),
                IN_REVIEW: dict.fromkeys(("rad_c1", *C1_ASSIGNERS), OK),
                CONCLUDED: dict.fromkeys(("rad_c1", *C1_ASSIGNERS), OK),
                OTHER: dict.fromkeys(("rad_c2", "admin"), NOT_FOUND),
            }
        ),
        case_params,
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/attachments",
        CASE_TARGETS,
        on_case(visible=CREATED),
        case_params,
        lambda _w, _t: {"files": {"file": ("note.txt", b"more information", "text/plain")}},
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/attachments/{event_id}",
        CASE_TARGETS,
        # The attachment belongs to IN_REVIEW; through any other case it is not found.
        on_case({IN_REVIEW: {"*": OK}}, visible=NOT_FOUND),
        case_params,
        check=check_attachment,
    ),
    # --- opinions ----------------------------------------------------------------------------
    Route(
        "GET",
        "/api/v1/cases/{case_id}/opinions",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=check_opinion_list,
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/opinions",
        CASE_TARGETS,
        on_case({IN_REVIEW: {"rad_c1": CREATED}, CONCLUDED: {"rad_c1": CONFLICT}}),
        case_params,
        json_body({"impression": "Second opinion"}),
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/opinions/{opinion_id}",
        CASE_TARGETS,
        # A draft is visible to its author only; a signed opinion to every viewer of the case.
        on_case({IN_REVIEW: {"rad_c1": OK}, CONCLUDED: {"*": OK}}, visible=NOT_FOUND),
        case_params,
    ),
    Route(
        "PATCH",
        "/api/v1/cases/{case_id}/opinions/{opinion_id}",
        CASE_TARGETS,
        on_case(
            {IN_REVIEW: {"rad_c1": OK}, CONCLUDED: {"*": FORBIDDEN, "rad_c1": CONFLICT}}, visible=NOT_FOUND
        ),
        case_params,
        json_body({"impression": "Edited"}),
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/opinions/{opinion_id}/sign",
        CASE_TARGETS,
        on_case(
            {IN_REVIEW: {"rad_c1": OK}, CONCLUDED: {"*": FORBIDDEN, "rad_c1": CONFLICT}}, visible=NOT_FOUND
        ),
        case_params,
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/opinions/{opinion_id}/addenda",
        CASE_TARGETS,
        on_case(
            {IN_REVIEW: {"rad_c1": CONFLICT}, CONCLUDED: {"*": FORBIDDEN, "rad_c1": CREATED}},
            visible=NOT_FOUND,
        ),
        case_params,
        json_body({"text": "Addendum"}),
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/opinions/{opinion_id}/pdf",
        CASE_TARGETS,
        # Read like the opinion; the draft is printed for nobody: 409 for those who may read it.
        on_case({IN_REVIEW: {"rad_c1": CONFLICT}, CONCLUDED: {"*": OK}}, visible=NOT_FOUND),
        case_params,
        check=check_pdf,
    ),
    # --- findings, triage and models ------------------------------------------------------------
    Route(
        "GET",
        "/api/v1/cases/{case_id}/findings",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=of_case(lambda w: w.findings),
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/findings/{finding_id}/accept",
        CASE_TARGETS,
        reviewers(OK),
        finding_params,
        json_body({"comment": "agree"}),
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/findings/{finding_id}/reject",
        CASE_TARGETS,
        reviewers(OK),
        finding_params,
        json_body({}),
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/findings/{finding_id}/amend",
        CASE_TARGETS,
        reviewers(OK),
        finding_params,
        json_body({"label": "nodule", "region": {"bbox": {"x": 1, "y": 2, "width": 3, "height": 4}}}),
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/findings/{finding_id}/heatmap",
        CASE_TARGETS,
        # Read like the case's findings (DRAFT has none: SUBMITTED's finding, of another case, 404s).
        on_case({DRAFT: {"*": NOT_FOUND}}, visible=OK),
        finding_params,
        check=check_png,
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/triage",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=of_case(lambda _w: {}),  # no triage ran in this world: every list is empty
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/fhir",
        CASE_TARGETS,
        # Read like the case; only a concluded (or closed) case has a final report: 409 before.
        on_case({CONCLUDED: {"*": OK}}, visible=CONFLICT),
        case_params,
    ),
    Route("GET", "/api/v1/models", ("all",), ml_only(lambda _t: OK), check=check_model_list),
    Route("GET", "/api/v1/models/agreement", ("all",), ml_only(lambda _t: OK)),
    Route(
        "POST",
        "/api/v1/models/{name}/versions/{version}/retriage",
        (ACTIVE_MODEL, CANDIDATE_MODEL, MISSING_MODEL),
        # Only the promoted (active) version is re-run; a candidate 409, an unknown version 404.
        ml_only({ACTIVE_MODEL: ACCEPTED, CANDIDATE_MODEL: CONFLICT, MISSING_MODEL: NOT_FOUND}.__getitem__),
        model_params,
    ),
    # --- slides ----------------------------------------------------------------------------------
    Route(
        "GET",
        "/api/v1/slides",
        ("all", *CASE_TARGETS),
        lambda p, t: OK if t == "all" else on_case(visible=OK)(p, t),
        body=lambda w, t: {} if t == "all" else {"params": {"case_id": w.case_id(t)}},
        check=check_slide_list,
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/slides",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=check_slide_list,
    ),
    Route("GET", "/api/v1/slides/{slide_id}", (PATHOLOGY, MISSING), on_case(visible=OK), slide_params),
    Route("GET", "/api/v1/slides/{slide_id}.dzi", (PATHOLOGY, MISSING), on_case(visible=OK), slide_params),
    Route(
        "GET",
        "/api/v1/slides/{slide_id}_files/{level}/{col}_{row}.jpeg",
        (PATHOLOGY, MISSING),
        on_case(visible=OK),
        slide_params,
        check=check_jpeg,
    ),
    Route(
        "GET",
        "/api/v1/slides/{slide_id}/thumbnail",
        (PATHOLOGY, MISSING),
        on_case(visible=OK),
        slide_params,
        lambda _w, _t: {"params": {"max_size": 64}},
        check=check_jpeg,
    ),
    Route(
        "GET",
        "/api/v1/slides/{slide_id}/region",
        (PATHOLOGY, MISSING),
        on_case(visible=OK),
        slide_params,
        lambda _w, _t: {"params": {"x": 0, "y": 0, "width": 64, "height": 64}},
        check=check_jpeg,
    ),
    Route(
        "GET",
        "/api/v1/slides/{slide_id}/associated/{name}",
        (PATHOLOGY, MISSING),
        on_case(visible=OK),  # the label shows the patient's name: no wider than the slide
        slide_params,
        check=check_jpeg,
    ),
    # --- DICOM -----------------------------------------------------------------------------------
    Route(
        "GET",
        "/api/v1/cases/{case_id}/studies",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=check_no_studies,
    ),
    Route(
        "POST",
        "/api/v1/cases/{case_id}/dicom",
        CASE_TARGETS,
        # The referring facility (or the admin) attaches images, until the case is concluded.
        on_case(
            {
                **{c: dict.fromkeys((*D1_REFERRERS, "admin"), CREATED) for c in D1_CASES - {CONCLUDED}},
                CONCLUDED: dict.fromkeys((*D1_REFERRERS, "admin"), CONFLICT),
                OTHER: dict.fromkeys(("ref_d2", "admin"), CREATED),
            }
        ),
        case_params,
        lambda w, _t: {"files": {"files": ("ct.dcm", w.dicom, "application/dicom")}},
    ),
    Route(
        "GET",
        "/api/v1/facilities/{facility_id}/dicom-nodes",
        ("D1", "C1", MISSING),
        facility_rule(manages, OK),
        facility_params,
        check=check_node_list,
    ),
    Route(
        "POST",
        "/api/v1/facilities/{facility_id}/dicom-nodes",
        ("D1", "C1", MISSING),
        facility_rule(manages, CREATED),
        facility_params,
        json_body({"ae_title": "MATRIX_NEW", "host": "10.0.0.9", "port": 104, "may_query": True}),
    ),
    Route(
        "DELETE",
        "/api/v1/facilities/{facility_id}/dicom-nodes/{node_id}",
        ("D1", "C1", MISSING),
        # The node belongs to D1: removing it through C1's path finds nothing.
        lambda p, t: facility_rule(manages, NO_CONTENT if t == "D1" else NOT_FOUND)(p, t),
        facility_params,
    ),
    # --- training exports ------------------------------------------------------------------------
    Route("POST", "/api/v1/exports/training", ("all",), ml_only(lambda _t: CREATED), body=json_body({})),
    Route(
        "GET",
        "/api/v1/exports/training/{export_id}/manifest",
        (EXPORT, MISSING),
        ml_only(lambda t: OK if t == EXPORT else NOT_FOUND),
        export_params,
    ),
    Route(
        "GET",
        "/api/v1/exports/training/{export_id}/archive",
        (EXPORT, MISSING),
        ml_only(lambda t: OK if t == EXPORT else NOT_FOUND),
        export_params,
    ),
    # --- video sessions --------------------------------------------------------------------------
    Route(
        "POST",
        "/api/v1/cases/{case_id}/sessions",
        CASE_TARGETS,
        # Anyone signed in who sees the (not closed) case opens one. An API key is no person: 403
        # for every case id alike, so the refusal tells nothing about the case.
        lambda p, t: FORBIDDEN if p == KEY else on_case(visible=CREATED)(p, t),
        case_params,
        json_body({"title": "Matrix session"}),
    ),
    Route(
        "GET",
        "/api/v1/cases/{case_id}/sessions",
        CASE_TARGETS,
        on_case(visible=OK),
        case_params,
        check=of_case(lambda w: w.sessions),
    ),
    Route("GET", "/api/v1/sessions/{session_id}", SESSION_TARGETS, on_case(visible=OK), session_params),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/participants",
        SESSION_TARGETS,
        hosts(OK),
        session_params,
        lambda w, t: {"json": {"user_id": w.user_id(SESSION_INVITEE.get(t, "rad2_c1"))}},
    ),
    Route(
        "POST",
        "/api/v1/sessions/{session_id}/join",
        SESSION_TARGETS,
        invited(OK),
        session_params,
        json_body({}),
    ),
    Route(
        "POST", "/api/v1/sessions/{session_id}/leave", SESSION_TARGETS, invited(NO_CONTENT), session_params
    ),
    Route("POST", "/api/v1/sessions/{session_id}/end", SESSION_TARGETS, hosts(OK), session_params),
    # The session page and its assets are the same static files for everyone.
    Route(
        "GET",
        "/api/v1/sessions/{session_id}/page",
        (IN_REVIEW, MISSING),
        everyone(OK),
        session_params,
        public=True,
    ),
    Route(
        "GET",
        "/api/v1/sessions/assets/{name}",
        ("session.js", "session.css"),
        everyone(OK),
        session_params,
        public=True,
    ),
)


# ---------------------------------------------------------------------------------------------
# Fixtures and the runner.
# ---------------------------------------------------------------------------------------------


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == CREATED, response.text
    result: dict[str, Any] = response.json()
    return result


def _seed_findings(
    factory: sessionmaker[Session], cases: dict[str, str], heatmap_sha256: str
) -> dict[str, str]:
    """One proposed AI finding on every non-draft case, as the triage worker would store it."""
    findings = {name: str(uuid.uuid4()) for name in (SUBMITTED, PATHOLOGY, IN_REVIEW, CONCLUDED, OTHER)}
    with factory.begin() as session:
        session.add_all(
            Finding(
                id=finding_id,
                case_id=cases[name],
                model_name="ct-dense",
                model_version="1.0.0",
                input_checksum="a" * 64,
                label="dense",
                score=0.9,
                priority="urgent",
                heatmap_sha256=heatmap_sha256,
            )
            for name, finding_id in findings.items()
        )
    return findings


def _seed_models(registry: ModelRegistry, folder: Path) -> None:
    """ct-dense 1.0.0 promoted (active), 2.0.0 registered only (a candidate)."""
    onnx = classifier_onnx(folder / "classifier.onnx")
    registry.register(ct_card(version="1.0.0"), onnx)
    registry.promote("ct-dense", "1.0.0")
    registry.register(ct_card(version="2.0.0"), onnx)


@pytest.fixture
def world(
    client: TestClient,
    network: Network,
    as_: Actors,
    session_factory: sessionmaker[Session],
    settings: Settings,
    svs_path: Path,
    ct_series_dir: Path,
    tmp_path: Path,
) -> Iterator[World]:
    issued = _created(
        client.post(
            f"{API}/facilities/{network.fid('D1')}/api-keys",
            json={"name": "gateway"},
            headers=as_["fadm_d1"],
        )
    )
    headers = {name: as_[name] for name in USERS}
    headers[KEY] = {"X-API-Key": issued["key"]}
    headers[ANON] = {}

    ref, rad, c1 = as_["ref_d1"], as_["rad_c1"], network.fid("C1")

    def submitted(headers: dict[str, str], target: str, kind: str = "imaging") -> str:
        case_id = str(new_case(client, headers, target, kind)["id"])
        move(client, headers, case_id, "submitted")
        return case_id

    def taken_with_opinion() -> tuple[str, str]:
        case_id = submitted(ref, c1)
        move(client, rad, case_id, "in_review")
        draft = client.post(
            f"{API}/cases/{case_id}/opinions",
            json={"findings": "Consolidation", "impression": "Pneumonia"},
            headers=rad,
        )
        return case_id, str(_created(draft)["id"])

    cases = {
        DRAFT: str(new_case(client, ref, c1)["id"]),
        SUBMITTED: submitted(ref, c1),
        PATHOLOGY: submitted(ref, c1, "pathology"),
        OTHER: submitted(as_["ref_d2"], network.fid("C2")),
    }
    cases[IN_REVIEW], in_review_opinion = taken_with_opinion()
    cases[CONCLUDED], signed_opinion = taken_with_opinion()
    signed = client.post(f"{API}/cases/{cases[CONCLUDED]}/opinions/{signed_opinion}/sign", headers=rad)
    assert signed.status_code == OK, signed.text
    attachment = client.post(
        f"{API}/cases/{cases[IN_REVIEW]}/attachments",
        files={"file": ("report.txt", ATTACHMENT, "text/plain")},
        headers=ref,
    )
    slide = upload_slide(client, ref, svs_path, cases[PATHOLOGY])
    heatmap = io.BytesIO()
    np.savez_compressed(heatmap, heatmap=np.eye(8, dtype=np.float16))  # one slice's heatmap
    heatmap_sha256 = client.app.state.blob_store.put_stream([heatmap.getvalue()]).sha256
    findings = _seed_findings(session_factory, cases, heatmap_sha256)
    _seed_models(ModelRegistry(settings.model_registry_dir), tmp_path)
    sessions = {}
    for name, invitees in ((IN_REVIEW, ["ref_d1"]), (OTHER, [])):
        opened = client.post(
            f"{API}/cases/{cases[name]}/sessions",
            json={"title": "Review", "invitees": [{"user_id": network.uid(u)} for u in invitees]},
            headers=as_[SESSION_HOSTS[name]],
        )
        sessions[name] = str(_created(opened)["id"])
    node = client.post(
        f"{API}/facilities/{network.fid('D1')}/dicom-nodes",
        json={"ae_title": "D1_GATEWAY", "host": "10.0.0.2", "port": 11112},
        headers=as_["fadm_d1"],
    )
    export = client.post(f"{API}/exports/training", json={}, headers=as_["ml_c1"])

    url = client.app.state.settings.resolved_database_url
    assert url.startswith("sqlite:///"), "the matrix restores a SQLite snapshot between requests"
    db_path = url.removeprefix("sqlite:///")
    snapshot = sqlite3.connect(":memory:")
    source = sqlite3.connect(db_path)
    try:
        source.backup(snapshot)
    finally:
        source.close()
    yield World(
        client=client,
        network=network,
        headers=headers,
        cases=cases,
        opinions={IN_REVIEW: in_review_opinion, CONCLUDED: signed_opinion},
        attachment_id=str(_created(attachment)["id"]),
        key_id=str(issued["id"]),
        slides={PATHOLOGY: str(slide["id"])},
        findings=findings,
        sessions=sessions,
        node_id=str(_created(node)["id"]),
        export_id=str(_created(export)["id"]),
        dicom=min(ct_series_dir.rglob("*.dcm")).read_bytes(),
        missing_id=str(uuid.uuid4()),
        db_path=db_path,
        snapshot=snapshot,
    )
    snapshot.close()


def call(world: World, route: Route, target: str, principal: str) -> httpx.Response:
    url = route.path.format(**route.params(world, target))
    kwargs = route.body(world, target)
    return world.client.request(route.method, url, headers=world.headers[principal], **kwargs)


def verdict(world: World, route: Route, target: str, principal: str, response: httpx.Response) -> str | None:
    """What is wrong with this response, or None."""
    want = OK if route.public else (401 if principal == ANON else route.expect(principal, target))
    got = response.status_code
    if got != want:
        return f"expected {want}, got {got}: {response.text[:160]}"
    if got >= 400:
        if response.headers.get("content-type") != PROBLEM_JSON or "detail" not in response.json():
            return f"{got} is not a problem+json document with a detail"
        if got == 401 and "www-authenticate" not in response.headers:
            return "401 without a WWW-Authenticate header"
        return None
    return route.check(world, principal, target, response) if route.check else None


def run(world: World, routes: tuple[Route, ...]) -> tuple[list[str], int]:
    failures: list[str] = []
    requests = 0
    for route in routes:
        for target in route.targets:
            for principal in PRINCIPALS:
                response = call(world, route, target, principal)
                requests += 1
                problem = verdict(world, route, target, principal, response)
                if problem:
                    failures.append(f"{route.method} {route.path} [{target}] as {principal}: {problem}")
                if response.is_success and route.method != "GET":
                    world.restore()
    return failures, requests


def check_restore(world: World) -> None:
    """The matrix relies on restore(): a change made before it must be gone after it."""
    case_id = world.cases[DRAFT]
    status_route = next(r for r in ROUTES if r.path == "/api/v1/cases/{case_id}/status")
    response = call(world, status_route, DRAFT, "ref_d1")
    assert response.status_code == OK
    assert world.client.get(f"{API}/cases/{case_id}", headers=world.headers["ref_d1"]).json()["status"] == (
        "submitted"
    )
    world.restore()
    after = world.client.get(f"{API}/cases/{case_id}", headers=world.headers["ref_d1"])
    assert after.json()["status"] == "draft"
    assert world.client.get(f"{API}/cases/{case_id}", headers=world.headers["rad_c1"]).status_code == 404


def test_access_matrix(world: World) -> None:
    """Every route x every principal x every record of the world (about 3,900 requests)."""
    check_restore(world)
    failures, requests = run(world, ROUTES)
    shown = "\n".join(failures[:80]) + (f"\n... and {len(failures) - 80} more" if len(failures) > 80 else "")
    assert not failures, f"{len(failures)} of {requests} requests answered wrongly:\n{shown}"


# ---------------------------------------------------------------------------------------------
# The matrix itself must cover every route, and be able to fail.
# ---------------------------------------------------------------------------------------------


CONVERTER = re.compile(r"\{(\w+):\w+\}")  # "{level:int}" is "{level}" in the OpenAPI document


def declared_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every endpoint, walking included routers and mounts."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):  # FastAPI's included-router branch
            yield from declared_routes(candidates(), prefix)
            continue
        path = getattr(route, "path", None)
        children = getattr(route, "routes", None)
        if path is None:
            continue
        if children and not getattr(route, "methods", None):  # a Mount
            yield from declared_routes(children, prefix + path)
            continue
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                yield method, CONVERTER.sub(r"{\1}", prefix + path)


def test_every_api_route_is_in_the_matrix(client: TestClient) -> None:
    declared = {r for r in declared_routes(list(client.app.routes)) if r[1].startswith(f"{API}/")}
    documented = {
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()
        if path.startswith(f"{API}/")
        for method in operations
    }
    # The walk must find at least what the OpenAPI document shows, or the check below is hollow.
    unseen = sorted(documented - declared)
    assert not unseen, f"the route walk missed {unseen}"
    covered = {(r.method, r.path) for r in ROUTES}
    uncovered = sorted(declared - covered)
    assert not uncovered, "routes missing from the access matrix (add a Route to ROUTES):\n" + "\n".join(
        f"  {method} {path}" for method, path in uncovered
    )
    stale = sorted(covered - declared)
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"
    assert len(covered) == len(ROUTES), "a route appears twice in the matrix"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_matrix_row_allows_and_denies(route: Route) -> None:
    """Every row expects success for someone and, unless public, refusal for someone else (lists:
    a check of what they hold)."""
    outcomes = {
        (OK if route.public else route.expect(p, t)) for p in PRINCIPALS if p != ANON for t in route.targets
    }
    assert any(200 <= code < 300 for code in outcomes), "no principal is expected to succeed"
    if not route.public:
        assert outcomes & {FORBIDDEN, NOT_FOUND} or route.check, "no principal is expected to be refused"
