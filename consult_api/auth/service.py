"""Turn credentials (password, bearer token, API key) into a ``Principal``."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from consult_api.access import GATEWAY_ROLE, Principal, Role
from consult_api.audit import service as audit
from consult_api.auth import repository as attempts
from consult_api.auth.security import (
    LoginThrottle,
    api_key_matches,
    burn_password_check,
    decode_access_token,
    hash_password,
    password_needs_rehash,
    split_api_key,
    verify_password,
)
from consult_api.db import utcnow
from consult_api.errors import TooManyRequests, Unauthenticated
from consult_api.facilities import repository as facilities
from consult_api.users import repository as users
from consult_api.users.models import User

BAD_CREDENTIALS = "incorrect username or password"
THROTTLED = "too many failed sign-ins; try again later"


def principal_for(user: User) -> Principal:
    return Principal(
        kind="user",
        id=user.id,
        facility_id=user.facility_id,
        roles=frozenset(Role(r) for r in user.roles),
        name=user.username,
    )


def _throttle_key(scope: str, value: str) -> str:
    return hashlib.sha256(f"{scope}:{value}".encode()).hexdigest()


def _check_throttle(
    session: Session, keys: list[tuple[str, int]], throttle: LoginThrottle, now: datetime
) -> None:
    """Refuse (429) while any key has used up its failures in the window, before any password check.

    Unknown usernames are counted exactly like known ones, so a 429 reveals nothing about accounts.
    Two replicas may each let one more attempt through under a race; the limit is approximate by
    that much and never lower than configured.
    """
    window = timedelta(seconds=throttle.window_seconds)
    retry_after = 0
    for key, limit in keys:
        count, oldest = attempts.failures_since(session, key, now - window)
        if count >= limit and oldest is not None:
            retry_after = max(retry_after, math.ceil((oldest + window - now).total_seconds()))
    if retry_after > 0:
        raise TooManyRequests(THROTTLED, retry_after=max(retry_after, 1))


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    client: str | None = None,
    throttle: LoginThrottle | None = None,
    now: datetime | None = None,
) -> User:
    """Check a password; unknown users cost the same Argon2 time as wrong passwords.

    With a ``throttle``, failures are counted per username and per client address (in the
    session: the caller commits them even though this raises); a success clears the username's
    count, not the address's (one good account must not unlock spraying from that address).
    """
    now = now or utcnow()
    user_key = _throttle_key("user", username.strip().lower())
    keys: list[tuple[str, int]] = []
    if throttle is not None:
        keys.append((user_key, throttle.max_failures))
        if client:
            keys.append((_throttle_key("ip", client), throttle.max_failures_per_ip))
        _check_throttle(session, keys, throttle, now)
    user = users.by_username(session, username)
    if user is None:
        burn_password_check(password)
        ok = False
    else:
        ok = verify_password(user.password_hash, password) and user.is_active
    if not ok or user is None:
        if throttle is not None:
            attempts.purge_before(session, now - timedelta(seconds=throttle.window_seconds))
            attempts.add_failures(session, (key for key, _ in keys), now)
        raise Unauthenticated(BAD_CREDENTIALS)
    if throttle is not None:
        attempts.clear(session, user_key)
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    audit.record(session, principal_for(user), "auth.login", "user", user.id)
    return user


def principal_from_token(session: Session, token: str, *, key: str, algorithm: str) -> Principal:
    """A valid, unexpired token of an active user issued after their last revocation."""
    claims = decode_access_token(token, key=key, algorithm=algorithm)
    if claims is None:
        raise Unauthenticated("invalid or expired token")
    user = users.get(session, claims.user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("invalid or expired token")
    if claims.issued_at < user.tokens_valid_after:
        raise Unauthenticated("token has been revoked")
    return principal_for(user)


def principal_from_api_key(session: Session, presented: str) -> Principal:
    parts = split_api_key(presented)
    key = users.api_key_by_prefix(session, parts[0]) if parts else None
    if parts is None or key is None or not api_key_matches(parts[1], key.secret_hash):
        raise Unauthenticated("invalid API key")
    if key.revoked_at is not None:
        raise Unauthenticated("API key has been revoked")
    facility = facilities.get(session, key.facility_id)
    if facility is None or not facility.active:
        raise Unauthenticated("API key's facility is not active")
    key.last_used_at = utcnow()
    return Principal(
        kind="api_key", id=key.id, facility_id=key.facility_id, roles=frozenset({GATEWAY_ROLE}), name=key.name
    )
