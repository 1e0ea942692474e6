from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from consult_api.schemas import Output, RecordId, ShortText, StrictInput
from consult_api.sessions.models import ParticipantRole, SessionStatus


class InviteIn(StrictInput):
    user_id: RecordId
    role: ParticipantRole = ParticipantRole.speaker


class SessionCreate(StrictInput):
    title: ShortText
    scheduled_at: datetime | None = Field(default=None, description="unset: the session starts now")
    record: bool = Field(default=False, description="record the session; every participant must consent")
    invitees: list[InviteIn] = Field(default_factory=list, max_length=500)


class JoinIn(StrictInput):
    recording_consent: bool | None = Field(
        default=None, description="required (true) to join a session that is recorded"
    )


class ParticipantRead(Output):
    user_id: str
    role: ParticipantRole
    facility_id: str
    display_name: str
    invited_at: datetime
    joined_at: datetime | None
    left_at: datetime | None
    recording_consent: bool | None


class SessionRead(Output):
    id: str
    case_id: str
    title: str
    provider: str
    status: SessionStatus
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    record: bool
    created_by: str
    created_at: datetime
    participants: list[ParticipantRead]


class JoinRead(Output):
    session_id: str
    provider: str
    role: ParticipantRole
    token: str = Field(description="join token for the signaling socket; short-lived")
    expires_in: int
    signal_url: str = Field(description="WebSocket path: send {type: join, token} first")
    page_url: str = Field(description="the session page; the token rides in the fragment")
    ice_servers: list[dict[str, Any]]
    media: dict[str, Any] = Field(description="provider details: Janus room and token, LiveKit URL and token")
