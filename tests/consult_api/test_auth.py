"""Authentication: the password flow, JWT lifetime and revocation, API keys, and who may grant what."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.auth.security import issue_access_token
from consult_api.orm import ApiKey, Base, User
from tests.conftest import PASSWORD, Actors, Network, new_case

API = "/api/v1"
TOKEN_URL = f"{API}/auth/token"
ME = f"{API}/users/me"
PROBLEM_JSON = "application/problem+json"
NEW_PASSWORD = "a brand new passphrase 2026"


def login(client: TestClient, username: str, password: str = PASSWORD) -> httpx.Response:
    return client.post(TOKEN_URL, data={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_for(client: TestClient, username: str, password: str = PASSWORD) -> str:
    response = login(client, username, password)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def assert_401(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"] == "Bearer"
    body: dict[str, Any] = response.json()
    assert body["detail"]
    return body


def claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "typ": "access",
        "iat": now.timestamp(),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "test",
    }
    base.update(overrides)
    return base


def signing_key(client: TestClient) -> str:
    key: str = client.app.state.settings.signing_key
    return key


# --- the password flow --------------------------------------------------------------------------


def test_token_issue(client: TestClient, network: Network) -> None:
    response = login(client, "rad_c1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    settings = client.app.state.settings
    assert body["expires_in"] == settings.access_token_minutes * 60
    decoded = jwt.decode(body["access_token"], signing_key(client), algorithms=[settings.jwt_algorithm])
    assert decoded["sub"] == network.uid("rad_c1")
    assert decoded["typ"] == "access"
    assert decoded["exp"] - decoded["iat"] == pytest.approx(body["expires_in"], abs=1)
    me = client.get(ME, headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "rad_c1"
    assert "password_hash" not in me.json()


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient, network: Network) -> None:
    wrong = assert_401(login(client, "ref_d1", "not the password"))
    unknown = assert_401(login(client, "nobody_at_all", PASSWORD))
    assert wrong == unknown
    assert wrong["detail"] == "incorrect username or password"


def test_deactivated_user_is_locked_out(client: TestClient, as_: Actors, network: Network) -> None:
    token = token_for(client, "ref_d1b")
    assert client.get(ME, headers=bearer(token)).status_code == 200
    off = client.patch(
        f"{API}/users/{network.uid('ref_d1b')}", json={"is_active": False}, headers=as_["fadm_d1"]
    )
    assert off.status_code == 200, off.text
    assert_401(client.get(ME, headers=bearer(token)))
    assert_401(client.get(f"{API}/cases", headers=bearer(token)))
    # A deactivated account cannot log in either, and says no more than a wrong password does.
    assert assert_401(login(client, "ref_d1b"))["detail"] == "incorrect username or password"
    # Reactivated: a fresh login works (the revocation of old tokens stays).
    on = client.patch(
        f"{API}/users/{network.uid('ref_d1b')}", json={"is_active": True}, headers=as_["fadm_d1"]
    )
    assert on.status_code == 200, on.text
    assert_401(client.get(ME, headers=bearer(token)))
    assert client.get(ME, headers=bearer(token_for(client, "ref_d1b"))).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_password_change_revokes_earlier_tokens(client: TestClient, network: Network) -> None:
    first, second = token_for(client, "rad_c1"), token_for(client, "rad_c1")
    wrong = client.post(
        f"{ME}/password",
        json={"current_password": "not it", "new_password": NEW_PASSWORD},
        headers=bearer(first),
    )
    assert wrong.status_code == 403, wrong.text
    assert client.get(ME, headers=bearer(first)).status_code == 200  # a failed change revokes nothing

    changed = client.post(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(first),
    )
    assert changed.status_code == 204, changed.text
    for token in (first, second):
        assert assert_401(client.get(ME, headers=bearer(token)))["detail"] == "token has been revoked"
    assert_401(login(client, "rad_c1", PASSWORD))
    assert client.get(ME, headers=bearer(token_for(client, "rad_c1", NEW_PASSWORD))).status_code == 200


def test_admin_password_reset_and_role_change_revoke_tokens(
    client: TestClient, as_: Actors, network: Network
) -> None:
    for change in ({"password": NEW_PASSWORD}, {"roles": ["referrer", "facility_admin"]}):
        token = token_for(client, "ref_d1b", NEW_PASSWORD if "roles" in change else PASSWORD)
        response = client.patch(f"{API}/users/{network.uid('ref_d1b')}", json=change, headers=as_["fadm_d1"])
        assert response.status_code == 200, response.text
        assert_401(client.get(ME, headers=bearer(token)))
    # A change of name alone revokes nothing.
    token = token_for(client, "ref_d1b", NEW_PASSWORD)
    renamed = client.patch(
        f"{API}/users/{network.uid('ref_d1b')}", json={"full_name": "Renamed"}, headers=as_["fadm_d1"]
    )
    assert renamed.status_code == 200
    assert client.get(ME, headers=bearer(token)).status_code == 200


# --- tokens that must not work -------------------------------------------------------------------


def test_expired_token(client: TestClient, network: Network) -> None:
    settings = client.app.state.settings
    user_id = network.uid("ref_d1")
    # Issued by the service's own issuer with a lifetime already over...
    expired, _ = issue_access_token(
        user_id, key=signing_key(client), algorithm=settings.jwt_algorithm, minutes=-1
    )
    body = assert_401(client.get(ME, headers=bearer(expired)))
    assert body["detail"] == "invalid or expired token"
    # ...and hand-made: issued now (so not revoked), expired a second ago.
    now = datetime.now(UTC)
    past = jwt.encode(
        claims(sub=user_id, exp=int(now.timestamp()) - 1), signing_key(client), settings.jwt_algorithm
    )
    assert_401(client.get(ME, headers=bearer(past)))
    # The control: the same construction, unexpired, is accepted.
    fresh = jwt.encode(claims(sub=user_id), signing_key(client), settings.jwt_algorithm)
    assert client.get(ME, headers=bearer(fresh)).status_code == 200


def forged_tokens(client: TestClient, network: Network) -> dict[str, str]:
    key, algorithm = signing_key(client), client.app.state.settings.jwt_algorithm
    admin_id, ref_id = network.uid("admin"), network.uid("ref_d1")
    genuine = jwt.encode(claims(sub=ref_id), key, algorithm)
    header, payload, signature = genuine.split(".")
    as_admin = jwt.encode(claims(sub=admin_id), key, algorithm).split(".")[1]
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    return {
        "other key": jwt.encode(claims(sub=admin_id), "another secret " + "y" * 40, algorithm),
        "payload swapped": f"{header}.{as_admin}.{signature}",
        "signature flipped": f"{header}.{payload}.{flipped}",
        "alg none": jwt.encode(claims(sub=admin_id), None, algorithm="none"),
        "wrong typ": jwt.encode(claims(sub=admin_id, typ="refresh"), key, algorithm),
        "no sub": jwt.encode({k: v for k, v in claims().items() if k != "sub"}, key, algorithm),
        "unknown user": jwt.encode(claims(sub="no-such-user"), key, algorithm),
        "garbage": "not.a.jwt",
    }


def test_forged_tokens_are_refused(client: TestClient, network: Network, subtests: Any) -> None:
    for name, token in forged_tokens(client, network).items():
        with subtests.test(msg=name):
            assert_401(client.get(ME, headers=bearer(token)))
            assert_401(client.get(f"{API}/cases", headers=bearer(token)))


def test_no_or_malformed_credentials(client: TestClient, network: Network) -> None:
    assert_401(client.get(ME))
    assert_401(client.get(ME, headers={"Authorization": "Bearer "}))
    assert_401(client.get(ME, headers={"Authorization": "Basic cmVmX2QxOnBhc3N3b3Jk"}))
    assert_401(client.get(ME, headers={"X-API-Key": "hck_nothing.here"}))
    assert_401(client.get(ME, headers={"X-API-Key": "not-even-shaped-right"}))


# --- API keys ------------------------------------------------------------------------------------


def every_stored_value(factory: sessionmaker[Session]) -> str:
    """The whole database as one string, to search for a secret."""
    with factory() as session:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table))
        )


def issue_key(client: TestClient, as_: Actors, network: Network, facility: str = "D1") -> dict[str, Any]:
    response = client.post(
        f"{API}/facilities/{network.fid(facility)}/api-keys",
        json={"name": "PACS gateway"},
        headers=as_[f"fadm_{facility.lower()}"],
    )
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_api_key_lifecycle(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    issued = issue_key(client, as_, network)
    secret = issued["key"]
    assert secret.startswith("hck_")
    assert issued["facility_id"] == network.fid("D1")
    assert issued["revoked_at"] is None
    body = secret.split(".", 1)[1]

    # The secret is shown once: never listed again, and not stored (only a hash of it is).
    listed = client.get(f"{API}/facilities/{network.fid('D1')}/api-keys", headers=as_["fadm_d1"])
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()] == [issued["id"]]
    assert "key" not in listed.json()[0]
    assert body not in listed.text
    with session_factory() as session:
        row = session.get(ApiKey, issued["id"])
        assert row is not None
        assert body not in row.secret_hash
        assert row.secret_hash == hashlib.sha256(body.encode()).hexdigest()
    assert body not in every_stored_value(session_factory)

    # It works as X-API-Key, with a referrer's rights at its own facility.
    gateway = {"X-API-Key": secret}
    case = new_case(client, gateway, network.fid("C1"))
    assert case["created_by"] == f"api_key:{issued['id']}"
    assert [c["id"] for c in client.get(f"{API}/cases", headers=gateway).json()["items"]] == [case["id"]]
    assert client.get(ME, headers=gateway).status_code == 403  # a key is not a user
    with session_factory() as session:
        used = session.get(ApiKey, issued["id"])
        assert used is not None
        assert used.last_used_at is not None
    # Tampered: right prefix, wrong secret.
    assert_401(client.get(f"{API}/cases", headers={"X-API-Key": secret[:-4] + "AAAA"}))

    # Revoked: it stops working at once; revoking twice is harmless.
    revoked = client.delete(
        f"{API}/facilities/{network.fid('D1')}/api-keys/{issued['id']}", headers=as_["fadm_d1"]
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert assert_401(client.get(f"{API}/cases", headers=gateway))["detail"] == "API key has been revoked"
    again = client.delete(
        f"{API}/facilities/{network.fid('D1')}/api-keys/{issued['id']}", headers=as_["fadm_d1"]
    )
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_api_key_of_a_deactivated_facility_stops_working(
    client: TestClient, as_: Actors, network: Network
) -> None:
    gateway = {"X-API-Key": issue_key(client, as_, network)["key"]}
    assert client.get(f"{API}/cases", headers=gateway).status_code == 200
    off = client.patch(f"{API}/facilities/{network.fid('D1')}", json={"active": False}, headers=as_["admin"])
    assert off.status_code == 200, off.text
    assert_401(client.get(f"{API}/cases", headers=gateway))


def test_api_keys_are_per_facility(client: TestClient, as_: Actors, network: Network) -> None:
    d1 = issue_key(client, as_, network, "D1")
    d2 = issue_key(client, as_, network, "D2")
    d2_case = new_case(client, {"X-API-Key": d2["key"]}, network.fid("C2"))
    d1_gateway = {"X-API-Key": d1["key"]}
    assert client.get(f"{API}/cases/{d2_case['id']}", headers=d1_gateway).status_code == 404
    # D2's administrator can neither list nor revoke D1's key, and the D1 key cannot manage keys.
    d1_keys = f"{API}/facilities/{network.fid('D1')}/api-keys"
    assert client.get(d1_keys, headers=as_["fadm_d2"]).status_code == 403
    assert client.delete(f"{d1_keys}/{d1['id']}", headers=as_["fadm_d2"]).status_code == 403
    assert client.post(d1_keys, json={"name": "x"}, headers=d1_gateway).status_code == 403
    # Through another facility's path, D1's key is not found.
    d2_keys = f"{API}/facilities/{network.fid('D2')}/api-keys"
    assert client.delete(f"{d2_keys}/{d1['id']}", headers=as_["fadm_d2"]).status_code == 404
    assert client.get(f"{API}/cases", headers=d1_gateway).status_code == 200


# --- password storage ----------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2id(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    password = "a fresh password for a new user"
    created = client.post(
        f"{API}/users",
        json={
            "username": "new.radiologist",
            "full_name": "New Radiologist",
            "password": password,
            "facility_id": network.fid("C1"),
            "roles": ["radiologist"],
        },
        headers=as_["fadm_c1"],
    )
    assert created.status_code == 201, created.text
    assert "password" not in created.text
    with session_factory() as session:
        hashes = dict(session.execute(select(User.username, User.password_hash)).all())
    assert hashes["new.radiologist"].startswith("$argon2id$")
    assert password not in hashes["new.radiologist"]
    assert all(h.startswith("$argon2id$") for h in hashes.values())
    assert password not in every_stored_value(session_factory)
    assert login(client, "new.radiologist", password).status_code == 200


# --- who may grant what --------------------------------------------------------------------------


def user_body(facility_id: str, roles: list[str], username: str = "someone.new") -> dict[str, Any]:
    return {
        "username": username,
        "full_name": "Someone New",
        "password": PASSWORD,
        "facility_id": facility_id,
        "roles": roles,
    }


def user_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return len(session.scalars(select(User.id)).all())


def test_facility_admin_cannot_grant_admin(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    before = user_count(session_factory)
    create = client.post(
        f"{API}/users", json=user_body(network.fid("D1"), ["referrer", "admin"]), headers=as_["fadm_d1"]
    )
    assert create.status_code == 403, create.text
    assert user_count(session_factory) == before
    for target in ("ref_d1", "fadm_d1"):  # nor to a user of their facility, nor to themselves
        promote = client.patch(
            f"{API}/users/{network.uid(target)}", json={"roles": ["admin"]}, headers=as_["fadm_d1"]
        )
        assert promote.status_code == 403, promote.text
        assert client.get(f"{API}/users/{network.uid(target)}", headers=as_["admin"]).json()["roles"] != [
            "admin"
        ]
    # The admin may.
    granted = client.post(
        f"{API}/users", json=user_body(network.fid("D1"), ["admin"], "second.admin"), headers=as_["admin"]
    )
    assert granted.status_code == 201, granted.text


def test_facility_admin_cannot_take_over_an_admin_account(
    client: TestClient, as_: Actors, network: Network
) -> None:
    """An administrator who happens to belong to D1 is not D1's administrator's to manage."""
    created = client.post(
        f"{API}/users", json=user_body(network.fid("D1"), ["admin"], "admin.at.d1"), headers=as_["admin"]
    )
    assert created.status_code == 201, created.text
    admin_id = created.json()["id"]
    for change in (
        {"password": "taken over by the facility admin"},
        {"is_active": False},
        {"roles": ["referrer"]},
    ):
        response = client.patch(f"{API}/users/{admin_id}", json=change, headers=as_["fadm_d1"])
        assert response.status_code == 403, f"{change}: {response.status_code} {response.text}"
    assert_401(login(client, "admin.at.d1", "taken over by the facility admin"))
    assert login(client, "admin.at.d1").status_code == 200


def test_facility_admin_manages_only_their_facility(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    before = user_count(session_factory)
    for facility in ("C1", "D2", "OPS"):
        response = client.post(
            f"{API}/users", json=user_body(network.fid(facility), ["referrer"]), headers=as_["fadm_d1"]
        )
        assert response.status_code == 403, f"{facility}: {response.text}"
    assert user_count(session_factory) == before
    # Users of other facilities are invisible to them: 404, not 403.
    for username in ("rad_c1", "ref_d2"):
        response = client.patch(
            f"{API}/users/{network.uid(username)}", json={"full_name": "X"}, headers=as_["fadm_d1"]
        )
        assert response.status_code == 404, response.text
    ok = client.post(f"{API}/users", json=user_body(network.fid("D1"), ["referrer"]), headers=as_["fadm_d1"])
    assert ok.status_code == 201, ok.text
    assert user_count(session_factory) == before + 1


def test_facility_admin_cannot_deactivate_themselves(
    client: TestClient, as_: Actors, network: Network
) -> None:
    response = client.patch(
        f"{API}/users/{network.uid('fadm_d1')}", json={"is_active": False}, headers=as_["fadm_d1"]
    )
    assert response.status_code == 409, response.text
    assert client.get(ME, headers=as_["fadm_d1"]).status_code == 200
