"""Append audit events to a hash chain and verify the chain.

Each event's hash covers its content and the previous event's hash. Editing a row breaks its own
hash; deleting a row breaks the next row's link. Appends are serialized (SQLite write lock via
``BEGIN IMMEDIATE``, a PostgreSQL advisory transaction lock) and ``prev_hash`` is unique, so two
writers can never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit.models import GENESIS_HASH, AuditEvent
from consult_api.db import utcnow

AUDIT_LOCK_KEY = 0x484F4943  # "HOIC": the advisory lock id that serializes appends on PostgreSQL
SYSTEM_ACTOR = "system"


def event_hash(
    *,
    occurred_at: datetime,
    actor: str,
    actor_facility_id: str | None,
    action: str,
    entity_type: str,
    entity_id: str | None,
    case_id: str | None,
    outcome: str,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    """The sha256 of an event's canonical JSON; any change to a field changes it."""
    canonical = json.dumps(
        {
            "occurred_at": occurred_at.isoformat(timespec="microseconds"),
            "actor": actor,
            "actor_facility_id": actor_facility_id,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "case_id": case_id,
            "outcome": outcome,
            "detail": detail,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stored_hash(event: AuditEvent) -> str:
    return event_hash(
        occurred_at=event.occurred_at,
        actor=event.actor,
        actor_facility_id=event.actor_facility_id,
        action=event.action,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        case_id=event.case_id,
        outcome=event.outcome,
        detail=event.detail,
        prev_hash=event.prev_hash,
    )


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})


def _chain_head(session: Session) -> str:
    head = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    return head or GENESIS_HASH


def record(
    session: Session,
    principal: Principal | None,
    action: str,
    entity_type: str,
    entity_id: str | None,
    *,
    case_id: str | None = None,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction; it commits or rolls back with the change."""
    _lock_chain(session)
    prev = _chain_head(session)
    occurred_at = utcnow()
    fields: dict[str, Any] = {
        "occurred_at": occurred_at,
        "actor": principal.actor if principal else SYSTEM_ACTOR,
        "actor_facility_id": principal.facility_id if principal else None,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "case_id": case_id,
        "outcome": outcome,
        "detail": detail or {},
        "prev_hash": prev,
    }
    event = AuditEvent(**fields, hash=event_hash(**fields))
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class ChainProblem:
    event_id: int
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    problems: list[ChainProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


def _events_in_order(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
        session.expunge_all()


def verify_chain(session: Session) -> VerifyReport:
    """Walk the chain from the genesis and name every event whose content or link is wrong."""
    problems: list[ChainProblem] = []
    expected_prev = GENESIS_HASH
    previous_id = 0
    checked = 0
    for event in _events_in_order(session):
        checked += 1
        if event.prev_hash != expected_prev:
            problems.append(
                ChainProblem(
                    event.id,
                    f"link broken: previous event hash does not match (an event between "
                    f"#{previous_id} and #{event.id} was deleted or altered)",
                )
            )
        if _stored_hash(event) != event.hash:
            problems.append(ChainProblem(event.id, "content changed: stored hash does not match the row"))
        expected_prev = event.hash
        previous_id = event.id
    return VerifyReport(checked=checked, problems=problems)
