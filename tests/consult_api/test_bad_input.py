"""Bad input answers 4xx with an RFC 9457 problem document, and leaves the database unchanged.

Every request below is wrong in one way; each is sent against the same world and the whole
database (every table of ``Base.metadata``, the audit chain included) is compared before and after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.orm import Base
from tests.conftest import PASSWORD, PATIENT, Actors, Network, move, new_case

PROBLEM_JSON = "application/problem+json"
LIMIT = 64 * 1024  # max_request_bytes for this module: small enough to exceed, big enough for the rest


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_request_bytes": LIMIT})


DbState = dict[str, list[str]]


def db_state(session_factory: sessionmaker[Session]) -> DbState:
    """Every row of every table, as sorted text: equal states mean nothing was written."""
    with session_factory() as session:
        return {
            table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


def counts(state: DbState) -> dict[str, int]:
    return {name: len(rows) for name, rows in state.items()}


@dataclass
class World:
    api: TestClient
    as_: Actors
    ids: dict[str, str]
    session_factory: sessionmaker[Session]

    def headers(self, actor: str | None) -> dict[str, str]:
        """Bearer headers; call before a snapshot, since the first login writes an audit row."""
        return self.as_[actor] if actor else {}

    def send(self, method: str, path: str, actor: str | None, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(actor), **kwargs.pop("headers", {})}
        return self.api.request(method, path.format(**self.ids), headers=headers, **kwargs)


@pytest.fixture
def world(client: TestClient, network: Network, as_: Actors, session_factory: sessionmaker[Session]) -> World:
    ref, rad, c1 = as_["ref_d1"], as_["rad_c1"], network.fid("C1")
    draft = new_case(client, ref, c1)
    review = new_case(client, ref, c1)
    move(client, ref, review["id"], "submitted")
    move(client, rad, review["id"], "in_review")
    opinion = client.post(f"/api/v1/cases/{review['id']}/opinions", json={"impression": "x"}, headers=rad)
    assert opinion.status_code == 201, opinion.text
    ids = {code: network.fid(code) for code in network.facilities}
    ids |= {
        "case": str(draft["id"]),
        "review": str(review["id"]),
        "opinion": opinion.json()["id"],
        "user": network.uid("ref_d1b"),
    }
    # 500s come back as responses, not exceptions, so a crash reads as a wrong status.
    api = TestClient(client.app, raise_server_exceptions=False)
    return World(api=api, as_=as_, ids=ids, session_factory=session_factory)


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    actor: str | None
    status: int
    loc: str | None = None  # schema problems: a field the errors must name; None: a domain rule
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> bool:
        return self.loc is not None


def case_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "imaging",
        "target_facility_id": "{C1}",
        "patient": dict(PATIENT),
        "clinical_question": "Chest CT, please",
    }
    body.update(changes)
    return body


def user_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": "new.user",
        "full_name": "New User",
        "password": PASSWORD,
        "facility_id": "{D1}",
        "roles": ["referrer"],
    }
    body.update(changes)
    return body


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def fill(value: Any, ids: dict[str, str]) -> Any:
    """Put the world's ids into "{C1}"-style placeholders anywhere in a JSON body."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


def j(body: Any) -> dict[str, Any]:
    return {"json": body}


def raw(content: bytes) -> dict[str, Any]:
    return {"content": content, "headers": {"Content-Type": "application/json"}}


CASES, CASE, STATUS = "/api/v1/cases", "/api/v1/cases/{case}", "/api/v1/cases/{case}/status"
USERS, USER, FACILITIES = "/api/v1/users", "/api/v1/users/{user}", "/api/v1/facilities"
OPINIONS = "/api/v1/cases/{review}/opinions"
NAIVE, PAST = "2030-01-01T10:00:00", "2020-01-01T00:00:00Z"

# fmt: off
BAD: dict[str, tuple[Bad, ...]] = {
    "not-json": (
        Bad("invalid-json", "POST", CASES, "ref_d1", 400, "body", raw(b'{"kind": "imaging",')),
        Bad("invalid-json-patch", "PATCH", CASE, "ref_d1", 400, "body", raw(b"{'single': 'quotes'}")),
        Bad("invalid-json-users", "POST", USERS, "admin", 400, "body", raw(b"\xff\xfe not utf-8")),
        Bad("json-array-not-object", "POST", CASES, "ref_d1", 422, "body", raw(b"[1, 2, 3]")),
        Bad("form-not-json", "POST", CASES, "ref_d1", 422, "body", {"data": {"kind": "imaging"}}),
    ),
    "wrong-types": (
        Bad("kind-number", "POST", CASES, "ref_d1", 422, "kind", j(case_body(kind=5))),
        Bad("urgent-word", "POST", CASES, "ref_d1", 422, "urgent", j(case_body(urgent="very"))),
        Bad("patient-string", "POST", CASES, "ref_d1", 422, "patient", j(case_body(patient="Nguyen"))),
        Bad("target-number", "POST", CASES, "ref_d1", 422, "target_facility_id",
            j(case_body(target_facility_id=1))),
        Bad("question-list", "POST", CASES, "ref_d1", 422, "clinical_question",
            j(case_body(clinical_question=["a"]))),
        Bad("birth-date-impossible", "POST", CASES, "ref_d1", 422, "birth_date",
            j(case_body(patient={**PATIENT, "birth_date": "1961-02-30"}))),
        Bad("roles-string", "POST", USERS, "admin", 422, "roles", j(user_body(roles="admin"))),
        Bad("roles-empty", "POST", USERS, "admin", 422, "roles", j(user_body(roles=[]))),
        Bad("email-invalid", "POST", USERS, "admin", 422, "email", j(user_body(email="not-an-email"))),
        Bad("urgent-patch-string", "PATCH", CASE, "ref_d1", 422, "urgent", j({"urgent": "maybe"})),
        Bad("assign-object", "POST", "/api/v1/cases/{review}/assignments", "rad_c1", 422, "user_id",
            j({"user_id": {"id": "x"}})),
        Bad("limit-zero", "GET", CASES, "ref_d1", 422, "limit", {"params": {"limit": 0}}),
        Bad("limit-huge", "GET", CASES, "ref_d1", 422, "limit", {"params": {"limit": 10_000}}),
        Bad("offset-negative", "GET", CASES, "ref_d1", 422, "offset", {"params": {"offset": -1}}),
    ),
    "oversized": (
        Bad("question-5001", "POST", CASES, "ref_d1", 422, "clinical_question",
            j(case_body(clinical_question="q" * 5001))),
        Bad("question-blank", "POST", CASES, "ref_d1", 422, "clinical_question",
            j(case_body(clinical_question="   "))),
        Bad("notes-20001", "POST", CASES, "ref_d1", 422, "clinical_notes",
            j(case_body(clinical_notes="n" * 20_001))),
        Bad("patient-name-300", "POST", CASES, "ref_d1", 422, "name",
            j(case_body(patient={**PATIENT, "name": "N" * 300}))),
        Bad("patient-id-65", "POST", CASES, "ref_d1", 422, "identifier",
            j(case_body(patient={**PATIENT, "identifier": "I" * 65}))),
        Bad("patch-question-5001", "PATCH", CASE, "ref_d1", 422, "clinical_question",
            j({"clinical_question": "q" * 5001})),
        Bad("user-full-name-300", "POST", USERS, "admin", 422, "full_name",
            j(user_body(full_name="F" * 300))),
        Bad("username-65", "POST", USERS, "admin", 422, "username", j(user_body(username="u" * 65))),
        Bad("username-spaces", "POST", USERS, "admin", 422, "username", j(user_body(username="bad user"))),
        Bad("facility-name-300", "POST", FACILITIES, "admin", 422, "name",
            j({"code": "NEW1", "name": "F" * 300, "tier": "district"})),
        Bad("comment-5001", "POST", "/api/v1/cases/{case}/comments", "ref_d1", 422, "text",
            j({"text": "c" * 5001})),
        Bad("comment-empty", "POST", "/api/v1/cases/{case}/comments", "ref_d1", 422, "text", j({"text": ""})),
        Bad("findings-20001", "POST", OPINIONS, "rad_c1", 422, "findings", j({"findings": "f" * 20_001})),
        Bad("assignee-id-37", "POST", "/api/v1/cases/{review}/assignments", "rad_c1", 422, "user_id",
            j({"user_id": "u" * 37})),
    ),
    "unknown-enums": (
        Bad("kind-unknown", "POST", CASES, "ref_d1", 422, "kind", j(case_body(kind="xray"))),
        Bad("sex-unknown", "POST", CASES, "ref_d1", 422, "sex", j(case_body(patient={**PATIENT,
            "sex": "X"}))),
        Bad("tier-unknown", "POST", FACILITIES, "admin", 422, "tier",
            j({"code": "NEW1", "name": "New", "tier": "regional"})),
        Bad("role-unknown", "POST", USERS, "admin", 422, "roles", j(user_body(roles=["superuser"]))),
        Bad("role-unknown-patch", "PATCH", USER, "fadm_d1", 422, "roles", j({"roles": ["root"]})),
        Bad("status-unknown", "POST", STATUS, "ref_d1", 422, "status", j({"status": "archived"})),
        Bad("status-filter-unknown", "GET", CASES, "ref_d1", 422, "status",
            {"params": {"status": "archived"}}),
        Bad("tier-filter-unknown", "GET", FACILITIES, "ref_d1", 422, "tier",
            {"params": {"tier": "regional"}}),
    ),
    "unknown-fields": (
        Bad("case-with-status", "POST", CASES, "ref_d1", 422, "status", j(case_body(status="concluded"))),
        Bad("case-with-referrer", "POST", CASES, "ref_d1", 422, "referring_facility_id",
            j(case_body(referring_facility_id="{D2}"))),
        Bad("patient-with-extra", "POST", CASES, "ref_d1", 422, "ssn", j(case_body(patient={**PATIENT,
            "ssn": "1"}))),
        Bad("patch-case-status", "PATCH", CASE, "ref_d1", 422, "status", j({"status": "closed"})),
        Bad("user-with-is-admin", "POST", USERS, "admin", 422, "is_admin", j(user_body(is_admin=True))),
        Bad("patch-user-facility", "PATCH", USER, "fadm_d1", 422, "facility_id", j({"facility_id": "{C1}"})),
        Bad("facility-with-id", "POST", FACILITIES, "admin", 422, "id",
            j({"id": "x", "code": "NEW1", "name": "New", "tier": "district"})),
        Bad("opinion-with-status", "POST", OPINIONS, "rad_c1", 422, "status", j({"impression": "x",
            "status": "signed"})),
        Bad("status-with-extra", "POST", STATUS, "ref_d1", 422, "force", j({"status": "submitted",
            "force": True})),
    ),
    "missing-fields": (
        Bad("case-no-patient", "POST", CASES, "ref_d1", 422, "patient", j(without(case_body(), "patient"))),
        Bad("case-no-question", "POST", CASES, "ref_d1", 422, "clinical_question",
            j(without(case_body(), "clinical_question"))),
        Bad("case-no-kind", "POST", CASES, "ref_d1", 422, "kind", j(without(case_body(), "kind"))),
        Bad("case-empty-object", "POST", CASES, "ref_d1", 422, "target_facility_id", j({})),
        Bad("user-no-password", "POST", USERS, "admin", 422, "password", j(without(user_body(), "password"))),
        Bad("status-no-status", "POST", STATUS, "ref_d1", 422, "status", j({"comment": "hello"})),
        Bad("token-no-password", "POST", "/api/v1/auth/token", None, 422, "password",
            {"data": {"username": "ref_d1"}}),
        Bad("no-body", "POST", CASES, "ref_d1", 422, "body", {}),
    ),
    "datetimes": (
        Bad("deadline-naive", "POST", CASES, "ref_d1", 422, "deadline", j(case_body(deadline=NAIVE))),
        Bad("deadline-garbage", "POST", CASES, "ref_d1", 422, "deadline", j(case_body(deadline="tomorrow"))),
        Bad("patch-deadline-naive", "PATCH", CASE, "ref_d1", 422, "deadline", j({"deadline": NAIVE})),
        Bad("deadline-past", "POST", CASES, "ref_d1", 422, None, j(case_body(deadline=PAST))),
        Bad("patch-deadline-past", "PATCH", CASE, "ref_d1", 422, None, j({"deadline": PAST})),
    ),
    "facilities": (
        Bad("facility-code-spaces", "POST", FACILITIES, "admin", 422, "code",
            j({"code": "bad code!", "name": "New", "tier": "district"})),
        Bad("facility-code-short", "POST", FACILITIES, "admin", 422, "code", j({"code": "A",
            "name": "New", "tier": "district"})),
        Bad("facility-code-long", "POST", FACILITIES, "admin", 422, "code",
            j({"code": "C" * 40, "name": "New", "tier": "district"})),
        Bad("facility-code-taken", "POST", FACILITIES, "admin", 409, None, j({"code": "D1",
            "name": "New", "tier": "district"})),
        Bad("case-target-unknown", "POST", CASES, "ref_d1", 422, None,
            j(case_body(target_facility_id="no-such-facility"))),
        Bad("case-target-unlinked", "POST", CASES, "ref_d1", 422, None,
            j(case_body(target_facility_id="{C2}"))),
        Bad("case-target-self", "POST", CASES, "ref_d1", 422, None, j(case_body(target_facility_id="{D1}"))),
        Bad("user-facility-unknown", "POST", USERS, "admin", 422, None,
            j(user_body(facility_id="no-such-facility"))),
        Bad("referral-unknown", "PUT", "/api/v1/facilities/{D1}/referrals", "admin", 422, None,
            j({"facility_ids": ["no-such-facility"]})),
        Bad("referral-downward", "PUT", "/api/v1/facilities/{C1}/referrals", "admin", 422, None,
            j({"facility_ids": ["{D1}"]})),
        Bad("referral-self", "PUT", "/api/v1/facilities/{D1}/referrals", "admin", 422, None,
            j({"facility_ids": ["{D1}"]})),
    ),
    "passwords": (
        Bad("password-short", "POST", USERS, "admin", 422, "password", j(user_body(password="short"))),
        Bad("password-11", "POST", USERS, "admin", 422, "password", j(user_body(password="p" * 11))),
        Bad("patch-password-short", "PATCH", USER, "fadm_d1", 422, "password", j({"password": "short"})),
        Bad("own-password-short", "POST", "/api/v1/users/me/password", "ref_d1", 422, "new_password",
            j({"current_password": PASSWORD, "new_password": "short"})),
        Bad("own-password-wrong-current", "POST", "/api/v1/users/me/password", "ref_d1", 403, None,
            j({"current_password": "not my password", "new_password": "a long enough password"})),
        Bad("username-taken", "POST", USERS, "admin", 409, None, j(user_body(username="ref_d1"))),
    ),
    "wrong-role": (
        Bad("radiologist-creates-case", "POST", CASES, "rad_c1", 403, None, j(case_body())),
        Bad("pathologist-creates-case", "POST", CASES, "path_c1", 403, None, j(case_body())),
        Bad("ml-engineer-creates-case", "POST", CASES, "ml_c1", 403, None, j(case_body())),
        Bad("facility-admin-creates-case", "POST", CASES, "fadm_d1", 403, None, j(case_body())),
        Bad("referrer-creates-user", "POST", USERS, "ref_d1", 403, None, j(user_body())),
        Bad("facility-admin-creates-facility", "POST", FACILITIES, "fadm_d1", 403, None,
            j({"code": "NEW1", "name": "New", "tier": "district"})),
    ),
}
# fmt: on


def check_problem(response: httpx.Response, status: int, *, schema: bool | None, loc: str | None) -> None:
    """A problem document with ``status``; schema problems list their ``errors`` (None: either)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["title"]
    if schema is None:
        return
    if not schema:
        assert "errors" not in body, body
        return
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"loc", "msg", "type"}
        assert error["msg"]
    if loc is not None:
        named = [str(part) for error in body["errors"] for part in error["loc"]]
        assert loc in named, f"no error names {loc!r}: {body['errors']}"


def send_and_check(world: World, bad: Bad, *, any_shape: bool = False) -> None:
    kwargs = dict(bad.kwargs)
    if "json" in kwargs:
        kwargs["json"] = fill(kwargs["json"], world.ids)
    world.headers(bad.actor)
    before = db_state(world.session_factory)
    response = world.send(bad.method, bad.path, bad.actor, **kwargs)
    check_problem(response, bad.status, schema=None if any_shape else bad.schema, loc=bad.loc)
    after = db_state(world.session_factory)
    assert counts(after) == counts(before)
    changed = sorted(name for name in before if before[name] != after[name])
    assert not changed, f"tables changed by a refused request: {changed}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_bad_request_is_refused_and_writes_nothing(world: World, subtests: Any) -> None:
    """Each request answers its 4xx as problem+json and the database is unchanged, audit included.

    One world for the whole table (logins are slow on purpose); each entry is its own subtest.
    """
    for category, entries in BAD.items():
        for bad in entries:
            with subtests.test(msg=f"{category}/{bad.id}"):
                send_and_check(world, bad)


def test_bad_request_ids_are_unique() -> None:
    ids = [bad.id for entries in BAD.values() for bad in entries]
    assert len(set(ids)) == len(ids)


# --- explicit nulls for fields that cannot be null ----------------------------------------------

NULLS = (
    ("case-urgent", CASE, "ref_d1", {"urgent": None}),
    ("case-question", CASE, "ref_d1", {"clinical_question": None}),
    ("case-notes", CASE, "ref_d1", {"clinical_notes": None}),
    ("user-full-name", USER, "fadm_d1", {"full_name": None}),
    ("user-on-duty", USER, "fadm_d1", {"on_duty": None}),
    ("facility-name", "/api/v1/facilities/{D1}", "admin", {"name": None}),
    ("facility-active", "/api/v1/facilities/{D1}", "admin", {"active": None}),
)


def test_null_for_a_required_field_is_refused(world: World, subtests: Any) -> None:
    """PATCH may leave a field out, but ``null`` for a NOT NULL column must be a 422, not a 500."""
    for name, path, actor, body in NULLS:
        with subtests.test(msg=f"null/{name}"):
            # Whether the schema or the service refuses it, it is a 422 that writes nothing.
            send_and_check(
                world, Bad(f"null-{name}", "PATCH", path, actor, 422, None, j(body)), any_shape=True
            )


# --- request size -------------------------------------------------------------------------------


def oversized_bodies(world: World) -> dict[str, dict[str, Any]]:
    """Three ways past ``max_request_bytes``: a declared JSON body, an upload, a chunked body."""
    body = json.dumps(fill(case_body(), world.ids)).encode()
    padded = body[:-1] + b" " * (LIMIT + 1) + b"}"  # valid JSON, just too long

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server only learns the size by reading
        yield body[:-1]
        for _ in range(4):
            yield b" " * (LIMIT // 2)
        yield b"}"

    return {
        "declared-json": {"path": CASES, **raw(padded)},
        "attachment": {
            "path": "/api/v1/cases/{case}/attachments",
            "files": {"file": ("big.bin", b"\0" * (LIMIT + 1), "application/octet-stream")},
        },
        "chunked-json": {"path": CASES, "content": chunks(), "headers": {"Content-Type": "application/json"}},
    }


def test_body_over_the_limit_is_413(world: World, subtests: Any) -> None:
    world.headers("ref_d1")
    for name, request in oversized_bodies(world).items():
        with subtests.test(msg=f"413/{name}"):
            path = request.pop("path")
            before = db_state(world.session_factory)
            response = world.send("POST", path, "ref_d1", **request)
            if name == "chunked-json":
                assert "content-length" not in response.request.headers
            check_problem(response, 413, schema=False, loc=None)
            assert db_state(world.session_factory) == before


# --- the checks themselves can fail -------------------------------------------------------------


def test_db_state_sees_writes(world: World) -> None:
    """A control: an accepted request does change the state the tests above compare."""
    before = db_state(world.session_factory)
    response = world.send("POST", CASES, "ref_d1", json=fill(case_body(), world.ids))
    assert response.status_code == 201, response.text
    after = db_state(world.session_factory)
    grown = {t for t in before if len(after[t]) > len(before[t])}
    assert {"cases", "case_events", "audit_events"} <= grown
