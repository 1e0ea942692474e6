"""The built-in provider: browsers connect to each other (a mesh) through our signaling socket.

No media server is needed, which suits a two-to-six person teleconsult; every browser uploads its
stream once per other peer, so bigger conferences belong on an SFU (Janus or LiveKit).
"""

from __future__ import annotations

from typing import Any

from consult_api.sessions.providers.base import RoomSpec, Seat


class BuiltinProvider:
    name = "builtin"

    @property
    def carries_media_over_signaling(self) -> bool:
        return True

    def open_room(self, spec: RoomSpec) -> str:
        return spec.session_id

    def admit(self, seat: Seat) -> dict[str, Any]:
        return {"publish": seat.publishes}

    def dismiss(self, seat: Seat) -> None:
        """Nothing to withdraw: the signaling socket itself refuses attendees' media."""

    def close_room(self, session_id: str, room: str) -> None:
        """Nothing to tear down: the signaling hub closes the sockets after the commit."""
