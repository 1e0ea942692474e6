"""Alerts: overdue and critical-finding alerts reach on-duty specialists (and admins when overdue)
by webhook (a local receiver) and e-mail (aiosmtpd), once, and flag the case in the worklist."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from consult_api.alerts import notify, service
from consult_api.alerts.models import AlertKind
from consult_api.cases.models import Case
from consult_api.config import Settings
from consult_api.db import utcnow
from consult_api.users.models import User
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.triage.conftest import Mailbox, Webhook


def _staff(factory: sessionmaker[Session], network: Network) -> None:
    with factory.begin() as session:
        for username, on_duty in [
            ("rad_c1", True),
            ("rad2_c1", False),
            ("path_c1", True),
            ("fadm_c1", False),
        ]:
            session.execute(
                update(User)
                .where(User.id == network.uid(username))
                .values(on_duty=on_duty, email=f"{username}@c1.example")
            )


def test_overdue_case_notifies_on_duty_specialists_and_admins_once(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
    webhook: Webhook,
    smtp_sink: Mailbox,
) -> None:
    _staff(session_factory, network)
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    move(client, as_["ref_d1"], case["id"], "submitted")
    with session_factory.begin() as session:
        session.execute(update(Case).values(deadline=utcnow() - timedelta(minutes=5)))
        raised = service.check_overdue(session)
        assert len(raised) == 1
        assert service.check_overdue(session) == []
    config = settings.model_copy(
        update={"alert_webhook_url": webhook.url, "smtp_host": "127.0.0.1", "smtp_port": smtp_sink.port}
    )
    with session_factory.begin() as session:
        notice = service.notice_for(session, raised[0])
    assert notice is not None
    assert sorted(notice.emails) == ["fadm_c1@c1.example", "rad_c1@c1.example"]
    delivery = notify.deliver(config, notice)
    assert delivery == {"webhook": "ok", "email": "ok"}
    with session_factory.begin() as session:
        assert service.record_delivery(session, raised[0], delivery, notice.user_ids)
        assert service.undelivered(session) == []
    assert webhook.received[0]["event"] == "case.overdue"
    assert webhook.received[0]["case_id"] == case["id"]
    assert "Nguyen" not in str(webhook.received[0])  # no patient data leaves by webhook
    assert len(smtp_sink.messages) == 1
    assert "Case overdue" in smtp_sink.messages[0]["Subject"]
    items = client.get("/api/v1/cases", headers=as_["rad_c1"]).json()["items"]
    assert items[0]["alerts"] == ["overdue"]


def test_critical_finding_goes_to_on_duty_specialists_only_and_failures_are_retried(
    client: TestClient,
    as_: Actors,
    network: Network,
    session_factory: sessionmaker[Session],
    settings: Settings,
) -> None:
    _staff(session_factory, network)
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    move(client, as_["ref_d1"], case["id"], "submitted")
    with session_factory.begin() as session:
        row = session.get(Case, case["id"])
        assert row is not None
        alert = service.raise_alert(session, row, AlertKind.critical_finding, "critical AI finding")
        assert alert is not None
        assert service.raise_alert(session, row, AlertKind.critical_finding, "again") is None
        alert_id = alert.id
    with session_factory.begin() as session:
        notice = service.notice_for(session, alert_id)
    assert notice is not None
    assert notice.emails == ["rad_c1@c1.example"]
    broken = settings.model_copy(update={"alert_webhook_url": "http://127.0.0.1:9/hook"})
    delivery = notify.deliver(broken, notice)
    assert delivery["webhook"].startswith("error")
    assert delivery["email"] == "skipped"
    with session_factory.begin() as session:
        assert not service.record_delivery(session, alert_id, delivery, notice.user_ids)
        assert service.undelivered(session) == [alert_id]  # the next check sends it again
