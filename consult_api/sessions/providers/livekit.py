"""LiveKit for cloud deployments: rooms per session, one access token per participant.

LiveKit creates a room when its first participant arrives, so opening a room costs no call; the
grants in each token carry the role (attendees may subscribe but not publish media or data).
Recording is LiveKit's (Egress): a host of a session marked ``record`` gets ``room_record``.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import httpx
from livekit import api

from consult_api.sessions.models import ParticipantRole
from consult_api.sessions.providers.base import RoomSpec, Seat

log = logging.getLogger(__name__)
SERVICE_TOKEN_TTL = timedelta(minutes=1)


def room_name(session_id: str) -> str:
    return f"hoichan-{session_id}"


def http_url(url: str) -> str:
    """LiveKit's server API (Twirp) answers on the same host as its WebSocket URL."""
    return url.replace("wss://", "https://", 1).replace("ws://", "http://", 1).rstrip("/")


class LiveKitProvider:
    name = "livekit"

    def __init__(self, *, url: str, api_key: str, api_secret: str, timeout: float = 5.0) -> None:
        self.url = url
        self.api_key = api_key
        self.api_secret = api_secret
        self.timeout = timeout

    @property
    def carries_media_over_signaling(self) -> bool:
        return False

    def open_room(self, spec: RoomSpec) -> str:
        return room_name(spec.session_id)

    def grants(self, seat: Seat) -> api.VideoGrants:
        return api.VideoGrants(
            room_join=True,
            room=seat.room,
            can_subscribe=True,
            can_publish=seat.publishes,
            can_publish_data=seat.publishes,
            room_admin=seat.role is ParticipantRole.host,
            room_record=seat.record and seat.role is ParticipantRole.host,
        )

    def admit(self, seat: Seat) -> dict[str, Any]:
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(seat.user_id)
            .with_name(seat.display_name)
            .with_ttl(seat.ttl)
            .with_metadata(json.dumps({"session_id": seat.session_id, "role": seat.role.value}))
            .with_grants(self.grants(seat))
            .to_jwt()
        )
        return {"livekit_url": self.url, "room": seat.room, "publish": seat.publishes, "token": token}

    def dismiss(self, seat: Seat) -> None:
        """Nothing to withdraw: tokens expire on their own and the client has disconnected."""

    def close_room(self, session_id: str, room: str) -> None:
        """Delete the room, disconnecting everyone; a failure is logged (LiveKit expires empty rooms)."""
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_ttl(SERVICE_TOKEN_TTL)
            .with_grants(api.VideoGrants(room_create=True, room=room))
            .to_jwt()
        )
        try:
            httpx.post(
                f"{http_url(self.url)}/twirp/livekit.RoomService/DeleteRoom",
                json={"room": room},
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
            ).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("livekit room not deleted", extra={"session_id": session_id, "error": str(exc)})
