"""Alert tasks: the periodic deadline check and one delivery per alert (retried while it fails)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from consult_api.alerts import notify as channels
from consult_api.alerts import service
from consult_api.db import transaction
from consult_api.worker import MAX_RETRIES, TRANSIENT_ERRORS, HoichanCelery, retry_countdown


def _app(task: Task) -> HoichanCelery:
    app: HoichanCelery = task.app
    return app


@shared_task(bind=True, name="alerts.check", max_retries=MAX_RETRIES)
def check(self: Task) -> dict[str, Any]:
    """Beat: raise overdue alerts, then send every alert not yet delivered (new or failed before)."""
    runtime = _app(self).runtime
    try:
        with transaction(runtime.session_factory) as session:
            raised = service.check_overdue(session)
            pending = service.undelivered(session)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from exc
    for alert_id in pending:
        _app(self).send("alerts.notify", alert_id)
    return {"raised": len(raised), "sent": len(pending)}


@shared_task(bind=True, name="alerts.notify", max_retries=MAX_RETRIES)
def notify(self: Task, alert_id: str) -> dict[str, Any]:
    """Deliver one alert by webhook and e-mail; a failed channel is retried with backoff."""
    app = _app(self)
    runtime = app.runtime
    with transaction(runtime.session_factory) as session:
        notice = service.notice_for(session, alert_id)
    if notice is None:
        return {"alert_id": alert_id, "delivered": "already"}
    delivery = channels.deliver(app.settings, notice)
    with transaction(runtime.session_factory) as session:
        ok = service.record_delivery(session, alert_id, delivery, notice.user_ids)
    if not ok and self.request.retries < self.max_retries:
        raise self.retry(countdown=retry_countdown(self.request.retries))
    return {"alert_id": alert_id, "delivery": delivery}
