"""Alerts: raise once per (case, kind), flag the case in the worklist, pick who to tell.

A critical AI finding tells the target facility's on-duty specialists for the case's kind; a case
past its deadline tells them and the facility's administrators. Delivery (webhook, e-mail) happens
outside any transaction (``notify``); ``notified_at`` is set only when every configured channel
took the message, so a failed delivery is retried by the next check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.alerts.models import AlertKind, CaseAlert
from consult_api.audit import service as audit
from consult_api.cases.models import Case, CaseStatus, EventType
from consult_api.cases.service import record_event
from consult_api.db import utcnow
from consult_api.users.models import User

DEADLINE_STATUSES = (CaseStatus.submitted, CaseStatus.triaged, CaseStatus.in_review, CaseStatus.needs_info)
MAX_ATTEMPTS = 20


def raise_alert(session: Session, case: Case, kind: AlertKind, reason: str) -> CaseAlert | None:
    """The alert if this call raised it; None if the case already has one of this kind."""
    if session.scalar(select(CaseAlert.id).where(CaseAlert.case_id == case.id, CaseAlert.kind == kind)):
        return None
    alert = CaseAlert(case_id=case.id, kind=kind, reason=reason)
    try:
        with session.begin_nested():
            session.add(alert)
            session.flush()
    except IntegrityError:
        return None
    case.alerts = sorted({*(case.alerts or []), kind.value})
    record_event(session, case, None, EventType.alert, text=reason)
    audit.record(session, None, f"alert.{kind.value}", "case", case.id, case_id=case.id)
    return alert


def check_overdue(session: Session, now: datetime | None = None) -> list[str]:
    """Raise an ``overdue`` alert for every open case past its deadline; returns the new alert ids."""
    now = now or utcnow()
    overdue = session.scalars(
        select(Case).where(
            Case.deadline < now,
            Case.status.in_(DEADLINE_STATUSES),
            ~select(CaseAlert.id)
            .where(CaseAlert.case_id == Case.id, CaseAlert.kind == AlertKind.overdue)
            .exists(),
        )
    ).all()
    ids = []
    for case in overdue:
        alert = raise_alert(
            session, case, AlertKind.overdue, f"past its deadline {case.deadline:%Y-%m-%d %H:%M} UTC"
        )
        if alert is not None:
            ids.append(alert.id)
    return ids


def undelivered(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(CaseAlert.id).where(CaseAlert.notified_at.is_(None), CaseAlert.attempts < MAX_ATTEMPTS)
        )
    )


def _probe(user: User) -> Principal:
    roles = frozenset(Role(r) for r in user.roles)
    return Principal(kind="user", id=user.id, facility_id=user.facility_id, roles=roles, name=user.username)


def recipients(session: Session, case: Case, kind: AlertKind) -> list[User]:
    """On-duty specialists of the target facility for this kind of case; admins too when overdue."""
    staff = session.scalars(
        select(User).where(User.facility_id == case.target_facility_id, User.is_active.is_(True))
    ).all()
    chosen = [u for u in staff if u.on_duty and _probe(u).is_specialist_for(case)]
    if kind is AlertKind.overdue:
        chosen += [u for u in staff if Role.facility_admin.value in u.roles and u not in chosen]
    return chosen


@dataclass(frozen=True)
class Notice:
    """What leaves the system: ids, kind, priority, deadline and the reason; never patient data."""

    alert_id: str
    kind: str
    case_id: str
    case_kind: str
    priority: str
    deadline: str | None
    reason: str
    facility_id: str
    user_ids: list[str]
    emails: list[str]

    def payload(self) -> dict[str, object]:
        return {
            "event": f"case.{self.kind}",
            "alert_id": self.alert_id,
            "case_id": self.case_id,
            "case_kind": self.case_kind,
            "priority": self.priority,
            "deadline": self.deadline,
            "reason": self.reason,
            "target_facility_id": self.facility_id,
            "recipients": self.user_ids,
        }

    @property
    def subject(self) -> str:
        label = "Critical AI finding" if self.kind == AlertKind.critical_finding.value else "Case overdue"
        return f"[Hoichan] {label}: {self.case_kind} case {self.case_id[:8]} ({self.priority})"

    @property
    def body(self) -> str:
        return (
            f"{self.reason}\n\nCase {self.case_id} ({self.case_kind}, priority {self.priority}, "
            f"deadline {self.deadline or 'none'}).\nOpen it from your Hoichan worklist.\n"
        )


def notice_for(session: Session, alert_id: str) -> Notice | None:
    """The message for an undelivered alert (None once delivered); recipients are chosen now."""
    alert = session.get(CaseAlert, alert_id)
    if alert is None or alert.notified_at is not None:
        return None
    case = session.get(Case, alert.case_id)
    if case is None:
        return None
    users = recipients(session, case, alert.kind)
    return Notice(
        alert_id=alert.id,
        kind=alert.kind.value,
        case_id=case.id,
        case_kind=case.kind.value,
        priority=case.priority.value,
        deadline=case.deadline.isoformat() if case.deadline else None,
        reason=alert.reason,
        facility_id=case.target_facility_id,
        user_ids=[u.id for u in users],
        emails=[u.email for u in users if u.email],
    )


def record_delivery(
    session: Session, alert_id: str, delivery: dict[str, str], user_ids: Sequence[str]
) -> bool:
    """Store the channels' outcomes; the alert counts as notified when none failed."""
    alert = session.get(CaseAlert, alert_id)
    if alert is None:
        return False
    alert.attempts += 1
    alert.delivery = delivery
    alert.recipients = list(user_ids)
    ok = all(v in ("ok", "skipped") for v in delivery.values())
    if ok:
        alert.notified_at = utcnow()
    audit.record(
        session,
        None,
        "alert.notify",
        "case_alert",
        alert.id,
        case_id=alert.case_id,
        outcome="success" if ok else "failure",
        detail={"delivery": delivery, "recipients": len(user_ids)},
    )
    return ok
