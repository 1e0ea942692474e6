"""Rules for review sessions: who may open, join, invite and end them, and what gets recorded.

Only users who may see the case take part: the case's visibility is checked when someone is
invited, again at every join, and again whenever the signaling socket admits a join token, so a
participant who loses access to the case (unassigned, deactivated) loses the session with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.auth.service import principal_for
from consult_api.cases import repository as cases_repository
from consult_api.cases.models import Case, CaseStatus, EventType
from consult_api.cases.service import get_case, record_event
from consult_api.db import utcnow
from consult_api.errors import Conflict, InvalidInput, NotPermitted, ResourceNotFound, Unauthenticated
from consult_api.sessions import repository
from consult_api.sessions.models import ParticipantRole, ReviewSession, SessionParticipant, SessionStatus
from consult_api.sessions.providers.base import MediaProvider, RoomSpec, Seat, may_publish
from consult_api.sessions.schemas import InviteIn, SessionCreate
from consult_api.sessions.tokens import JoinTokens
from consult_api.users import repository as users
from consult_api.users.models import User

START_EARLY = timedelta(minutes=15)
"""A scheduled session opens to its participants this long before its time (hosts: any time)."""
ENTITY = "review_session"


@dataclass(frozen=True)
class JoinGrant:
    review: ReviewSession
    role: ParticipantRole
    token: str
    expires_in: int
    media: dict[str, Any]


@dataclass(frozen=True)
class Admission:
    """A join token accepted by the signaling socket: who is connecting, and to what."""

    session_id: str
    case_id: str
    user_id: str
    display_name: str
    role: ParticipantRole
    media_over_signaling: bool
    roster: list[dict[str, str]]
    token: str
    expires_in: int

    @property
    def may_publish(self) -> bool:
        return may_publish(self.role)


def _review(session: Session, principal: Principal, session_id: str) -> tuple[ReviewSession, Case]:
    """The session and its case, or 404 for both a missing session and an invisible case."""
    review = repository.get(session, session_id)
    if review is None:
        raise ResourceNotFound("session", session_id)
    try:
        case = get_case(session, principal, review.case_id, audit_read=False)
    except ResourceNotFound:
        raise ResourceNotFound("session", session_id) from None
    return review, case


def _log(
    session: Session,
    principal: Principal,
    review: ReviewSession,
    case: Case,
    event: EventType,
    action: str,
    text: str,
    **detail: object,
) -> None:
    """Every session event goes to the case timeline and the audit chain, in the same transaction."""
    record_event(session, case, principal, event, text=f"{review.title}: {text}")
    audit.record(
        session,
        principal,
        action,
        ENTITY,
        review.id,
        case_id=case.id,
        detail={"session_id": review.id, **detail},
    )


def _check_provider(review: ReviewSession, provider: MediaProvider) -> None:
    if review.provider != provider.name:
        raise Conflict(
            f"this session was opened on the {review.provider} provider; the service now runs {provider.name}"
        )


def _seat(review: ReviewSession, participant: SessionParticipant, ttl: timedelta) -> Seat:
    return Seat(
        session_id=review.id,
        room=review.provider_room or review.id,
        user_id=participant.user_id,
        display_name=participant.display_name,
        role=participant.role,
        record=review.record,
        ttl=ttl,
    )


def _start(review: ReviewSession, provider: MediaProvider) -> None:
    review.provider_room = provider.open_room(RoomSpec(review.id, review.title, review.record))
    review.status = SessionStatus.live
    review.started_at = utcnow()


def _active_user(session: Session, user_id: str) -> User:
    user = users.get(session, user_id)
    if user is None or not user.is_active:
        raise InvalidInput(f"user {user_id} does not exist or is inactive")
    return user


def _add_participant(
    session: Session, principal: Principal, review: ReviewSession, case: Case, invite: InviteIn
) -> SessionParticipant:
    """Invite one user, who must be able to see the case; inviting again changes their role."""
    user = _active_user(session, invite.user_id)
    if cases_repository.visible_case(session, principal_for(user), case.id) is None:
        raise InvalidInput(f"user {user.username} may not see this case; invite only users who can")
    participant = repository.participant(review, user.id)
    if participant is None:
        participant = SessionParticipant(
            user_id=user.id,
            role=invite.role,
            facility_id=user.facility_id,
            display_name=user.full_name,
            invited_by=principal.actor,
        )
        review.participants.append(participant)
    else:
        participant.role = invite.role
    repository.flush(session)
    _log(
        session,
        principal,
        review,
        case,
        EventType.session_invited,
        "session.invite",
        f"{user.username} invited as {invite.role.value}",
        user_id=user.id,
        role=invite.role.value,
    )
    return participant


def _check_host(principal: Principal, review: ReviewSession) -> None:
    participant = repository.participant(review, principal.id)
    if not (principal.is_admin or (participant and participant.role is ParticipantRole.host)):
        raise NotPermitted("only the session's hosts may do this")


def create_session(
    session: Session, principal: Principal, provider: MediaProvider, case_id: str, data: SessionCreate
) -> ReviewSession:
    """Open a session on a case now, or schedule it; the creator becomes its host."""
    if not principal.is_user:
        raise NotPermitted("video sessions are opened by signed-in users")
    case = get_case(session, principal, case_id, audit_read=False)
    if case.status is CaseStatus.closed:
        raise Conflict("the case is closed")
    if data.scheduled_at is not None and data.scheduled_at <= utcnow():
        raise InvalidInput("scheduled_at must be in the future; leave it out to start now")
    review = ReviewSession(
        case_id=case.id,
        title=data.title,
        provider=provider.name,
        status=SessionStatus.scheduled,
        scheduled_at=data.scheduled_at,
        record=data.record,
        created_by=principal.actor,
    )
    repository.add(session, review)
    if data.scheduled_at is None:
        _start(review, provider)
    when = data.scheduled_at.isoformat() if data.scheduled_at else "now"
    _log(
        session,
        principal,
        review,
        case,
        EventType.session_created,
        "session.create",
        f"video session ({review.provider}) {when}{', recorded' if review.record else ''}",
        record=review.record,
        provider=review.provider,
    )
    _add_participant(
        session, principal, review, case, InviteIn(user_id=principal.id, role=ParticipantRole.host)
    )
    for invite in data.invitees:
        if invite.user_id != principal.id:
            _add_participant(session, principal, review, case, invite)
    return review


def list_sessions(session: Session, principal: Principal, case_id: str) -> Sequence[ReviewSession]:
    case = get_case(session, principal, case_id, audit_read=False)
    return repository.of_case(session, case.id)


def get_session(session: Session, principal: Principal, session_id: str) -> ReviewSession:
    review, _case = _review(session, principal, session_id)
    return review


def invite(session: Session, principal: Principal, session_id: str, data: InviteIn) -> ReviewSession:
    review, case = _review(session, principal, session_id)
    _check_host(principal, review)
    if review.status is SessionStatus.ended:
        raise Conflict("the session has ended")
    _add_participant(session, principal, review, case, data)
    return review


def _open_for(review: ReviewSession, participant: SessionParticipant, provider: MediaProvider) -> None:
    """A scheduled session starts when its host joins, or when anyone joins near its time."""
    if review.status is SessionStatus.ended:
        raise Conflict("the session has ended")
    if review.status is SessionStatus.live:
        return
    assert review.scheduled_at is not None
    if participant.role is not ParticipantRole.host and utcnow() < review.scheduled_at - START_EARLY:
        raise Conflict(f"the session opens at {(review.scheduled_at - START_EARLY).isoformat()}")
    _start(review, provider)


def _check_consent(review: ReviewSession, participant: SessionParticipant, consent: bool | None) -> None:
    if review.record and consent is not True:
        raise NotPermitted("this session is recorded: join with recording_consent true, or do not join")
    if consent is not None:
        participant.recording_consent = consent


def join(
    session: Session,
    principal: Principal,
    provider: MediaProvider,
    tokens: JoinTokens,
    session_id: str,
    consent: bool | None,
) -> JoinGrant:
    """Admit an invited user who can still see the case; returns their join token and media details."""
    review, case = _review(session, principal, session_id)
    _check_provider(review, provider)
    participant = repository.participant(review, principal.id)
    if participant is None:
        raise NotPermitted("you are not invited to this session")
    _open_for(review, participant, provider)
    _check_consent(review, participant, consent)
    participant.joined_at, participant.left_at = utcnow(), None
    media = provider.admit(_seat(review, participant, timedelta(seconds=tokens.lifetime_seconds)))
    repository.flush(session)
    _log(
        session,
        principal,
        review,
        case,
        EventType.session_joined,
        "session.join",
        f"{principal.name} joined as {participant.role.value}",
        role=participant.role.value,
        recording_consent=participant.recording_consent,
    )
    return JoinGrant(
        review=review,
        role=participant.role,
        token=tokens.issue(review.id, principal.id),
        expires_in=tokens.lifetime_seconds,
        media=media,
    )


def leave(session: Session, principal: Principal, provider: MediaProvider, session_id: str) -> None:
    review, case = _review(session, principal, session_id)
    participant = repository.participant(review, principal.id)
    if participant is None:
        raise NotPermitted("you are not invited to this session")
    if review.status is not SessionStatus.live or participant.joined_at is None or participant.left_at:
        return
    participant.left_at = utcnow()
    provider.dismiss(_seat(review, participant, timedelta(0)))
    repository.flush(session)
    _log(session, principal, review, case, EventType.session_left, "session.leave", f"{principal.name} left")


def end(session: Session, principal: Principal, provider: MediaProvider, session_id: str) -> ReviewSession:
    review, case = _review(session, principal, session_id)
    _check_host(principal, review)
    if review.status is SessionStatus.ended:
        raise Conflict("the session has already ended")
    if review.status is SessionStatus.live and review.provider_room:
        _check_provider(review, provider)
        provider.close_room(review.id, review.provider_room)
    review.status, review.ended_at = SessionStatus.ended, utcnow()
    repository.flush(session)
    _log(
        session, principal, review, case, EventType.session_ended, "session.end", f"ended by {principal.name}"
    )
    return review


def _signal_principal(session: Session, tokens: JoinTokens, session_id: str, token: str) -> Principal:
    claims = tokens.decode(token)
    if claims is None:
        raise Unauthenticated("invalid or expired join token")
    if claims.session_id != session_id:
        raise NotPermitted("this join token belongs to another session")
    user = users.get(session, claims.user_id)
    if user is None or not user.is_active or claims.issued_at < user.tokens_valid_after:
        raise Unauthenticated("invalid or expired join token")
    return principal_for(user)


def _connected_participant(review: ReviewSession, principal: Principal) -> SessionParticipant:
    if review.status is not SessionStatus.live:
        raise Conflict(f"the session is {review.status.value}")
    participant = repository.participant(review, principal.id)
    if participant is None or participant.joined_at is None or participant.left_at is not None:
        raise NotPermitted("join the session through the API first")
    return participant


def admit_connection(
    session: Session, provider: MediaProvider, tokens: JoinTokens, session_id: str, token: str
) -> Admission:
    """Check a join token presented to the signaling socket, and re-check the case's visibility."""
    principal = _signal_principal(session, tokens, session_id, token)
    review, case = _review(session, principal, session_id)
    participant = _connected_participant(review, principal)
    audit.record(session, principal, "session.connect", ENTITY, review.id, case_id=case.id)
    roster = [
        {"user_id": p.user_id, "name": p.display_name, "role": p.role.value, "facility_id": p.facility_id}
        for p in review.participants
    ]
    return Admission(
        session_id=review.id,
        case_id=case.id,
        user_id=principal.id,
        display_name=participant.display_name,
        role=participant.role,
        media_over_signaling=review.provider == provider.name and provider.carries_media_over_signaling,
        roster=roster,
        token=tokens.issue(review.id, principal.id),
        expires_in=tokens.lifetime_seconds,
    )


def renew_token(session: Session, tokens: JoinTokens, session_id: str, token: str) -> str:
    """A fresh join token for a connected participant, so the page can reconnect after a drop."""
    principal = _signal_principal(session, tokens, session_id, token)
    review, _case = _review(session, principal, session_id)
    _connected_participant(review, principal)
    return tokens.issue(review.id, principal.id)


def leave_by_token(
    session: Session, provider: MediaProvider, tokens: JoinTokens, session_id: str, token: str
) -> None:
    """The session page's Leave button: it holds a join token, not an access token."""
    principal = _signal_principal(session, tokens, session_id, token)
    leave(session, principal, provider, session_id)
