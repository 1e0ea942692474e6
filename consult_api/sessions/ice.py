"""STUN/TURN servers handed to browsers.

With coturn's ``use-auth-secret`` (its "TURN REST API"), credentials are minted per user and
expire: username ``<unix expiry>:<user id>``, password base64(HMAC-SHA1(secret, username)). A
static user/password pair is also accepted for small sites, at the price of never expiring.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class IceConfig:
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_username: str | None = None
    turn_password: str | None = None
    turn_shared_secret: str | None = None


def turn_rest_credential(secret: str, user_id: str, expires_at: datetime) -> tuple[str, str]:
    username = f"{int(expires_at.timestamp())}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: IceConfig, user_id: str, now: datetime, ttl: timedelta) -> list[dict[str, object]]:
    """``RTCIceServer`` dictionaries, ready for ``new RTCPeerConnection({iceServers})``."""
    servers: list[dict[str, object]] = []
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls:
        turn: dict[str, object] = {"urls": list(config.turn_urls)}
        if config.turn_shared_secret:
            turn["username"], turn["credential"] = turn_rest_credential(
                config.turn_shared_secret, user_id, now + ttl
            )
        elif config.turn_username and config.turn_password:
            turn["username"], turn["credential"] = config.turn_username, config.turn_password
        servers.append(turn)
    return servers
