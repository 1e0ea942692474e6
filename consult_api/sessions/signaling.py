"""The signaling hub: relays offers, answers and ICE candidates between a session's peers, and
carries the presenter's view state for synchronized viewing.

Peers are addressed by user id, one connection per user (a reconnect replaces the old one).
Messages to an invited participant who is not connected yet are buffered and delivered when
they arrive, so the first offer is never lost to a race. Every hub method is synchronous and
runs on the event loop: each peer has its own bounded outbox drained by its socket's writer, so a
slow link can never stall the others (a peer whose outbox overflows is disconnected).

No web framework here: the router adapts a WebSocket to a ``Peer``'s outbox.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consult_api.sessions.errors import RoomFull
from consult_api.sessions.models import ParticipantRole
from consult_api.sessions.sdp import sends_media

OUTBOX_SIZE = 512
PENDING_PER_PEER = 256
CLOSE_REPLACED = 4000
CLOSE_ENDED = 4001
CLOSE_TOO_SLOW = 4008


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass
class Peer:
    user_id: str
    name: str
    role: ParticipantRole
    outbox: asyncio.Queue[str | Close] = field(default_factory=lambda: asyncio.Queue(OUTBOX_SIZE))
    closing: bool = False

    def send(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        if self.outbox.full():
            self.close(CLOSE_TOO_SLOW, "too slow: messages piled up")
            return
        self.outbox.put_nowait(json.dumps(message, separators=(",", ":")))

    def close(self, code: int, reason: str) -> None:
        """Drop what is unsent and close; the first reason given is the one the client sees."""
        if self.closing:
            return
        self.closing = True
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.outbox.put_nowait(Close(code, reason))

    def send_then_close(self, message: dict[str, Any], code: int, reason: str) -> None:
        if self.closing:
            return
        if self.outbox.qsize() > OUTBOX_SIZE - 2:
            self.close(code, reason)
            return
        self.send(message)
        self.closing = True
        self.outbox.put_nowait(Close(code, reason))

    @property
    def info(self) -> dict[str, str]:
        return {"user_id": self.user_id, "name": self.name, "role": self.role.value}


class ViewState(BaseModel):
    """What the presenter's viewer shows; followers apply it to their own viewer."""

    model_config = ConfigDict(extra="forbid")

    study_uid: str | None = Field(default=None, max_length=64)
    series_uid: str | None = Field(default=None, max_length=64)
    slice: int | None = Field(default=None, ge=0)
    window: dict[str, float] | None = Field(default=None, description="center and width")
    slide_id: str | None = Field(default=None, max_length=36)
    viewport: dict[str, float] | None = Field(default=None, description="x, y, width, height or zoom")
    finding_id: str | None = Field(default=None, max_length=36)


@dataclass
class Room:
    session_id: str
    case_id: str
    media: bool
    max_peers: int | None
    invited: set[str]
    peers: dict[str, Peer] = field(default_factory=dict)
    pending: dict[str, deque[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    presenter: str | None = None
    view: dict[str, Any] | None = None

    def broadcast(self, message: dict[str, Any], *, skip: str | None = None) -> None:
        for user_id, peer in self.peers.items():
            if user_id != skip:
                peer.send(message)


class SignalingHub:
    """All rooms of this process; built by the app factory, one per app."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}

    def attach(
        self,
        peer: Peer,
        *,
        session_id: str,
        case_id: str,
        media: bool,
        max_peers: int | None,
        invited: set[str],
        welcome: dict[str, Any],
    ) -> None:
        room = self.rooms.setdefault(session_id, Room(session_id, case_id, media, max_peers, invited))
        room.invited = invited
        previous = room.peers.get(peer.user_id)
        if previous is None and room.max_peers is not None and len(room.peers) >= room.max_peers:
            raise RoomFull(f"this session already has {room.max_peers} participants online")
        if previous is not None:
            previous.close(CLOSE_REPLACED, "replaced by a newer connection")
        room.peers[peer.user_id] = peer
        self._forget_sent_by(room, peer.user_id)
        if room.presenter is None and peer.role is not ParticipantRole.attendee:
            room.presenter = peer.user_id
        peer.send(self._welcome(room, peer, welcome))
        for sender, message in room.pending.pop(peer.user_id, deque()):
            peer.send({"type": "signal", "from": sender, "data": message})
        room.broadcast({"type": "peer-joined", "peer": peer.info}, skip=peer.user_id)

    def detach(self, session_id: str, peer: Peer) -> None:
        """Forget a closed connection (unless a newer one of the same user replaced it)."""
        room = self.rooms.get(session_id)
        if room is None or room.peers.get(peer.user_id) is not peer:
            return
        del room.peers[peer.user_id]
        room.broadcast({"type": "peer-left", "user_id": peer.user_id})
        if room.presenter == peer.user_id:
            room.presenter = None
            room.broadcast({"type": "presenter", "user_id": None})
        if not room.peers:
            del self.rooms[session_id]

    def end(self, session_id: str) -> None:
        """The session ended: tell everyone and close every socket."""
        room = self.rooms.pop(session_id, None)
        for peer in room.peers.values() if room else ():
            peer.send_then_close({"type": "ended"}, CLOSE_ENDED, "the session has ended")

    def handle(self, session_id: str, peer: Peer, message: dict[str, Any]) -> None:
        room = self.rooms.get(session_id)
        if room is None or room.peers.get(peer.user_id) is not peer:
            return
        kind = message.get("type")
        if kind == "signal":
            self._relay(room, peer, message)
        elif kind == "view":
            self._view(room, peer, message.get("state"))
        elif kind == "present":
            self._present(room, peer)
        elif kind == "ping":
            peer.send({"type": "pong"})
        else:
            peer.send({"type": "error", "detail": f"unknown message type {kind!r}"})

    def _welcome(self, room: Room, peer: Peer, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "welcome",
            **peer.info,
            "online": sorted(room.peers),
            "presenter": room.presenter,
            "view": room.view,
            "media": room.media,
            **extra,
        }

    def _forget_sent_by(self, room: Room, sender: str) -> None:
        """A (re)connecting peer starts a fresh negotiation: its older undelivered messages are stale."""
        for queue in room.pending.values():
            stale = [item for item in queue if item[0] == sender]
            for item in stale:
                queue.remove(item)

    def _relay(self, room: Room, peer: Peer, message: dict[str, Any]) -> None:
        target, data = message.get("to"), message.get("data")
        if not room.media:
            peer.send({"type": "error", "detail": "media goes through the SFU in this session"})
            return
        if not isinstance(target, str) or target not in room.invited or target == peer.user_id:
            peer.send({"type": "error", "detail": "signal 'to' must be another participant's user id"})
            return
        if not isinstance(data, dict) or not ({"sdp", "candidate"} & data.keys()):
            peer.send({"type": "error", "detail": "signal 'data' carries an sdp or a candidate"})
            return
        if peer.role is ParticipantRole.attendee and _offers_media(data):
            peer.send({"type": "error", "detail": "attendees receive only: sending media is refused"})
            return
        recipient = room.peers.get(target)
        if recipient is not None:
            recipient.send({"type": "signal", "from": peer.user_id, "data": data})
        else:
            room.pending.setdefault(target, deque(maxlen=PENDING_PER_PEER)).append((peer.user_id, data))

    def _view(self, room: Room, peer: Peer, state: object) -> None:
        if room.presenter != peer.user_id:
            peer.send({"type": "error", "detail": "only the presenter steers the view; take over first"})
            return
        try:
            view = ViewState.model_validate(state).model_dump(exclude_none=True)
        except ValidationError as exc:
            peer.send({"type": "error", "detail": f"invalid view state: {exc.error_count()} error(s)"})
            return
        room.view = {"case_id": room.case_id, **view}
        room.broadcast({"type": "view", "from": peer.user_id, "state": room.view}, skip=peer.user_id)

    def _present(self, room: Room, peer: Peer) -> None:
        if peer.role is ParticipantRole.attendee:
            peer.send({"type": "error", "detail": "attendees cannot present"})
            return
        room.presenter = peer.user_id
        room.broadcast({"type": "presenter", "user_id": peer.user_id})


def _offers_media(data: dict[str, Any]) -> bool:
    sdp = data.get("sdp")
    return isinstance(sdp, dict) and isinstance(sdp.get("sdp"), str) and sends_media(sdp["sdp"])
