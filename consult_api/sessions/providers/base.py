"""What every media provider offers the session service, in plain values (no ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from consult_api.sessions.models import ParticipantRole

PUBLISHING_ROLES = frozenset({ParticipantRole.host, ParticipantRole.speaker})


def may_publish(role: ParticipantRole) -> bool:
    """Hosts and speakers send media; attendees only receive (training broadcasts, big conferences)."""
    return role in PUBLISHING_ROLES


@dataclass(frozen=True)
class RoomSpec:
    session_id: str
    title: str
    record: bool


@dataclass(frozen=True)
class Seat:
    """One participant's place in one room, as the provider needs to know it."""

    session_id: str
    room: str
    user_id: str
    display_name: str
    role: ParticipantRole
    record: bool
    ttl: timedelta

    @property
    def publishes(self) -> bool:
        return may_publish(self.role)


class MediaProvider(Protocol):
    name: str

    @property
    def carries_media_over_signaling(self) -> bool:
        """True when browsers exchange SDP through our WebSocket (mesh), False for an SFU."""
        ...

    def open_room(self, spec: RoomSpec) -> str:
        """Create the room (or name it) and return the reference stored on the session."""
        ...

    def admit(self, seat: Seat) -> dict[str, Any]:
        """Let one participant in; returns what their client needs to connect (URLs, tokens)."""
        ...

    def dismiss(self, seat: Seat) -> None:
        """Withdraw a participant's right to publish after they leave."""
        ...

    def close_room(self, session_id: str, room: str) -> None:
        """Tear the room down when the session ends."""
        ...
