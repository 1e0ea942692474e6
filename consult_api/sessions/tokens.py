"""Join tokens: short-lived JWTs of their own kind, scoped to one session and one user.

They are separate from access tokens so a leaked join link opens one session's signaling for
minutes and nothing else; an access token is never accepted where a join token is expected.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

JOIN_TOKEN_TYPE = "session-join"  # noqa: S105 - a token kind, not a secret


@dataclass(frozen=True)
class JoinClaims:
    session_id: str
    user_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class JoinTokens:
    """Issues and checks join tokens with the service's signing key."""

    key: str
    algorithm: str
    minutes: int

    @property
    def lifetime_seconds(self) -> int:
        return self.minutes * 60

    def issue(self, session_id: str, user_id: str, *, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": user_id,
            "sid": session_id,
            "typ": JOIN_TOKEN_TYPE,
            "iat": now.timestamp(),
            "exp": int((now + timedelta(minutes=self.minutes)).timestamp()),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self.key, algorithm=self.algorithm)

    def decode(self, token: str) -> JoinClaims | None:
        """The claims, or None when the token is forged, expired or not a join token."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                options={"require": ["sub", "sid", "exp", "iat", "typ"]},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != JOIN_TOKEN_TYPE:
            return None
        return JoinClaims(
            session_id=str(claims["sid"]),
            user_id=str(claims["sub"]),
            issued_at=datetime.fromtimestamp(claims["iat"], UTC),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )
