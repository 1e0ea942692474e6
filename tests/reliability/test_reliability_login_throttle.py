"""Login throttling: per username and per client address, shared through the database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.app import create_app
from consult_api.auth import service
from consult_api.auth.models import LoginAttempt
from consult_api.auth.security import LoginThrottle
from consult_api.config import Settings
from consult_api.db import utcnow
from consult_api.errors import TooManyRequests, Unauthenticated
from tests.conftest import PASSWORD, Network

TOKEN = "/api/v1/auth/token"


def _login(client: TestClient, username: str, password: str) -> httpx.Response:
    return client.post(TOKEN, data={"username": username, "password": password})


@pytest.fixture
def throttled(settings: Settings, network: Network) -> Iterator[TestClient]:
    limited = settings.model_copy(
        update={"login_max_failures": 3, "login_max_failures_per_ip": 8, "login_window_seconds": 600}
    )
    with TestClient(create_app(limited)) as client:
        yield client


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_username_locked_after_failures_then_429_with_retry_after(throttled: TestClient) -> None:
    for _ in range(3):
        assert _login(throttled, "ref_d1", "wrong").status_code == 401
    # Locked: even the right password is refused, as problem+json with Retry-After.
    locked = _login(throttled, "ref_d1", PASSWORD)
    assert locked.status_code == 429
    assert locked.headers["content-type"].startswith("application/problem+json")
    retry = int(locked.headers["Retry-After"])
    assert 1 <= retry <= 600
    assert locked.json()["status"] == 429
    # Another user from the same client is not locked by ref_d1's failures.
    assert _login(throttled, "ref_d2", PASSWORD).status_code == 200


def test_unknown_username_indistinguishable_from_known(throttled: TestClient) -> None:
    known = [_login(throttled, "ref_d1", "wrong") for _ in range(4)]
    unknown = [_login(throttled, "no_such_person", "wrong") for _ in range(4)]
    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [401, 401, 401, 429]
    assert known[0].json() == unknown[0].json()
    assert known[-1].json()["detail"] == unknown[-1].json()["detail"]
    assert set(known[-1].headers) >= {"retry-after"} and "retry-after" in unknown[-1].headers


def test_success_resets_the_username_count(throttled: TestClient) -> None:
    for _ in range(2):
        assert _login(throttled, "rad_c1", "wrong").status_code == 401
    assert _login(throttled, "rad_c1", PASSWORD).status_code == 200
    for _ in range(2):
        assert _login(throttled, "rad_c1", "wrong").status_code == 401
    assert _login(throttled, "RAD_C1", PASSWORD).status_code == 200  # usernames are case-insensitive


def test_client_address_locked_across_usernames(throttled: TestClient) -> None:
    # Password spraying: one wrong guess for many usernames from one address.
    statuses = [_login(throttled, f"user{i}", "Winter2026!").status_code for i in range(8)]
    assert statuses == [401] * 8
    blocked = _login(throttled, "ref_d1", PASSWORD)
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) >= 1


def test_failures_are_stored_hashed_and_expire(
    session_factory: sessionmaker[Session], network: Network
) -> None:
    throttle = LoginThrottle(max_failures=2, max_failures_per_ip=100, window_seconds=60)
    start = utcnow()
    for i in range(2):
        with session_factory() as session:
            with pytest.raises(Unauthenticated):
                service.authenticate(
                    session,
                    "ref_d1",
                    "wrong",
                    client="10.0.0.9",
                    throttle=throttle,
                    now=start + timedelta(seconds=i),
                )
            session.commit()
    with session_factory() as session:
        with pytest.raises(TooManyRequests) as locked:
            service.authenticate(
                session,
                "ref_d1",
                PASSWORD,
                client="10.0.0.9",
                throttle=throttle,
                now=start + timedelta(seconds=5),
            )
        assert locked.value.retry_after == 55
        keys = session.scalars(select(LoginAttempt.key_hash)).all()
        assert keys and all(len(k) == 64 and "ref_d1" not in k for k in keys)
    # Once the window has passed, the right password works and the table is cleaned up.
    with session_factory() as session:
        later = start + timedelta(seconds=61)
        user = service.authenticate(
            session, "ref_d1", PASSWORD, client="10.0.0.9", throttle=throttle, now=later
        )
        assert user.username == "ref_d1"
        session.commit()
    with session_factory() as session:
        with pytest.raises(Unauthenticated):
            service.authenticate(
                session,
                "ref_d2",
                "wrong",
                client="10.0.0.7",
                throttle=throttle,
                now=start + timedelta(seconds=62),
            )
        session.commit()
        # Old rows purged, ref_d1's cleared, only ref_d2's two fresh keys (user and address) remain.
        assert session.scalar(select(func.count()).select_from(LoginAttempt)) == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_count_is_shared_between_replicas(settings: Settings, network: Network) -> None:
    """Two app instances on one database: failures at one lock the username at the other."""
    limited = settings.model_copy(update={"login_max_failures": 2})
    with TestClient(create_app(limited)) as one, TestClient(create_app(limited)) as two:
        assert _login(one, "path_c1", "wrong").status_code == 401
        assert _login(two, "path_c1", "wrong").status_code == 401
        assert _login(one, "path_c1", PASSWORD).status_code == 429
        assert _login(two, "path_c1", PASSWORD).status_code == 429
