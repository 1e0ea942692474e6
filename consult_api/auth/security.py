"""Password hashing (Argon2id), JWT access tokens and API key secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_KEY_PREFIX = "hck_"
TOKEN_TYPE = "access"  # noqa: S105 - a token kind, not a secret


@dataclass(frozen=True)
class PasswordPolicy:
    """Argon2id cost parameters; the defaults are RFC 9106's second recommended profile."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4


class _Passwords:
    """The process's Argon2id hasher, set once from Settings at start-up (like logging)."""

    def __init__(self, policy: PasswordPolicy) -> None:
        self.policy = policy
        self.hasher = PasswordHasher(
            time_cost=policy.time_cost, memory_cost=policy.memory_kib, parallelism=policy.parallelism
        )
        # Verified against when a username is unknown, so a login takes as long either way.
        self.dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class LoginThrottle:
    """Failed logins allowed per username and per client address within a sliding window."""

    max_failures: int = 5
    max_failures_per_ip: int = 50
    window_seconds: float = 900.0


_passwords: _Passwords | None = None


def set_password_policy(policy: PasswordPolicy) -> None:
    global _passwords  # process-wide configuration, set by the composition root
    if _passwords is None or _passwords.policy != policy:
        _passwords = _Passwords(policy)


def _current() -> _Passwords:
    if _passwords is None:
        set_password_policy(PasswordPolicy())
    assert _passwords is not None
    return _passwords


def hash_password(password: str) -> str:
    return _current().hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _current().hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _current().hasher.check_needs_rehash(password_hash)


def burn_password_check(password: str) -> None:
    """Spend one verification's time for an unknown user, so timing does not reveal usernames."""
    verify_password(_current().dummy_hash, password)


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    issued_at: datetime
    expires_at: datetime


def issue_access_token(user_id: str, *, key: str, algorithm: str, minutes: int) -> tuple[str, int]:
    """A signed, short-lived bearer token; returns the token and its lifetime in seconds."""
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "typ": TOKEN_TYPE,
        "iat": now.timestamp(),  # fractional, so revocation is exact
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm=algorithm), minutes * 60


def decode_access_token(token: str, *, key: str, algorithm: str) -> AccessClaims | None:
    """The token's claims, or None when it is forged, expired or of another kind."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[algorithm], options={"require": ["sub", "exp", "iat", "typ"]}
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != TOKEN_TYPE:
        return None
    return AccessClaims(
        user_id=str(claims["sub"]),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


@dataclass(frozen=True)
class NewApiKey:
    prefix: str
    secret: str
    secret_hash: str


def generate_api_key() -> NewApiKey:
    """``hck_<prefix>.<secret>``: the prefix finds the row, only the secret's sha256 is stored.

    The secret carries 256 random bits, so a fast hash is safe here (unlike passwords) and keeps
    every gateway request cheap.
    """
    prefix = secrets.token_hex(6)
    body = secrets.token_urlsafe(32)
    return NewApiKey(prefix=prefix, secret=f"{API_KEY_PREFIX}{prefix}.{body}", secret_hash=_sha256(body))


def split_api_key(presented: str) -> tuple[str, str] | None:
    if not presented.startswith(API_KEY_PREFIX) or "." not in presented:
        return None
    prefix, _, body = presented[len(API_KEY_PREFIX) :].partition(".")
    return (prefix, body) if prefix and body else None


def api_key_matches(body: str, secret_hash: str) -> bool:
    return hmac.compare_digest(_sha256(body), secret_hash)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
