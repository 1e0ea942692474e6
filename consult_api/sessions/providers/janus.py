"""Janus VideoRoom: one room per session, created and destroyed through Janus's HTTP API.

Attendees must not publish. Janus enforces it, not the browser: each room is created with an
empty ``allowed`` list, so joining as a publisher needs a token on that list, and Hoichan adds a
token only for hosts and speakers. Attendees join as subscribers, which needs no token. The room's
``secret`` (needed to change the list or destroy the room) and the tokens are HMACs of the
service's signing key, so nothing about a room has to be stored besides its number.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

import httpx

from consult_api.sessions.errors import ProviderUnavailable
from consult_api.sessions.providers.base import RoomSpec, Seat

log = logging.getLogger(__name__)
VIDEOROOM = "janus.plugin.videoroom"
NO_SUCH_ROOM = 426
MAX_JS_SAFE_INT = 2**53  # room numbers travel through JavaScript clients


class JanusProvider:
    name = "janus"

    def __init__(
        self,
        *,
        api_url: str,
        public_url: str,
        signing_key: str,
        admin_key: str | None = None,
        max_publishers: int = 16,
        timeout: float = 5.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.public_url = public_url
        self._key = signing_key.encode()
        self.admin_key = admin_key
        self.max_publishers = max_publishers
        self.timeout = timeout

    @property
    def carries_media_over_signaling(self) -> bool:
        return False

    def room_secret(self, room: str) -> str:
        return self._mac(f"janus-room:{room}")

    def publisher_token(self, seat: Seat) -> str:
        return self._mac(f"janus-publisher:{seat.room}:{seat.user_id}")

    def open_room(self, spec: RoomSpec) -> str:
        room = str(secrets.randbelow(MAX_JS_SAFE_INT - 1) + 1)
        body: dict[str, Any] = {
            "request": "create",
            "room": int(room),
            "description": spec.title[:100],
            "secret": self.room_secret(room),
            "publishers": self.max_publishers,
            "allowed": [],
            "is_private": True,
            "record": False,
        }
        if self.admin_key:
            body["admin_key"] = self.admin_key
        self._request(body)
        return room

    def admit(self, seat: Seat) -> dict[str, Any]:
        token = None
        if seat.publishes:
            token = self.publisher_token(seat)
            self._allowed(seat.room, "add", token)
        return {
            "janus_url": self.public_url,
            "room": int(seat.room),
            "publish": seat.publishes,
            "token": token,
        }

    def dismiss(self, seat: Seat) -> None:
        if seat.publishes:
            self._allowed(seat.room, "remove", self.publisher_token(seat))

    def close_room(self, session_id: str, room: str) -> None:
        body = {"request": "destroy", "room": int(room), "secret": self.room_secret(room)}
        try:
            self._request(body)
        except ProviderUnavailable as exc:
            if exc.extra.get("janus_error") != NO_SUCH_ROOM:
                raise

    def _allowed(self, room: str, action: str, token: str) -> None:
        self._request(
            {
                "request": "allowed",
                "room": int(room),
                "secret": self.room_secret(room),
                "action": action,
                "allowed": [token],
            }
        )

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One synchronous VideoRoom request on a short-lived Janus session (no keep-alives)."""
        try:
            with httpx.Client(timeout=self.timeout) as client:
                session = _data_id(_post(client, self.api_url, {"janus": "create"}))
                try:
                    handle = _data_id(
                        _post(client, f"{self.api_url}/{session}", {"janus": "attach", "plugin": VIDEOROOM})
                    )
                    reply = _post(
                        client, f"{self.api_url}/{session}/{handle}", {"janus": "message", "body": body}
                    )
                finally:
                    _post(client, f"{self.api_url}/{session}", {"janus": "destroy"})
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"Janus at {self.api_url} did not answer: {type(exc).__name__}"
            ) from exc
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise ProviderUnavailable(
                f"Janus refused {body['request']}: {data.get('error')}", janus_error=data["error_code"]
            )
        return data


def _post(client: httpx.Client, url: str, message: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json={**message, "transaction": secrets.token_hex(6)})
    response.raise_for_status()
    reply: dict[str, Any] = response.json()
    if reply.get("janus") == "error":
        error = reply.get("error", {})
        raise ProviderUnavailable(
            f"Janus error: {error.get('reason', 'unknown')}", janus_error=error.get("code")
        )
    return reply


def _data_id(reply: dict[str, Any]) -> int:
    return int(reply["data"]["id"])
