"""Triage tasks: take ids, re-fetch, call the service; messages are sent only after a commit.

Failures are split in two: ``TRANSIENT_ERRORS`` (a locked database, a lost connection) are retried
with exponential backoff and count as permanent after ``MAX_RETRIES``; anything else (a model that
raises, a series that cannot be reconstructed, a soft time limit) is permanent at once and recorded
on the case's timeline with the reason, and the task ends normally so nothing else is disturbed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from consult_api.db import transaction, utcnow
from consult_api.triage import service
from consult_api.worker import (
    MAX_RETRIES,
    QUEUES,
    TRANSIENT_ERRORS,
    HoichanCelery,
    Runtime,
    retry_countdown,
)

log = logging.getLogger("consult_api.triage")
SLIDE_LOOKBACK = timedelta(days=1)
RUN_TASKS = {"triage.dicom": "triage.run_series", "triage.wsi": "triage.run_slide"}


def _app(task: Task) -> HoichanCelery:
    app: HoichanCelery = task.app
    return app


def _send_runs(app: HoichanCelery, runs: Sequence[tuple[str, str]]) -> None:
    for run_id, queue in runs:
        app.send(RUN_TASKS[queue], run_id)


def enqueue_slide_triage(app: HoichanCelery, slide_id: str) -> None:
    """Call after the transaction that created the slide commits (the slides upload route).

    Optional: the beat sweep (``check_studies``) also finds slides with no triage run yet.
    """
    app.send("triage.plan_slide", slide_id)


@shared_task(bind=True, name="triage.check_studies", max_retries=0)
def check_studies(self: Task) -> dict[str, int]:
    """Beat: complete quiet studies and plan their runs; plan new slides too; send after commit."""
    app = _app(self)
    runtime = app.runtime
    cards = runtime.registry.active_cards()
    with transaction(runtime.session_factory) as session:
        runs = service.check_studies(session, cards, app.settings.study_stable_seconds)
        runs += service.check_new_slides(session, cards, utcnow() - SLIDE_LOOKBACK)
    _send_runs(app, runs)
    return {"runs": len(runs)}


@shared_task(bind=True, name="triage.sweep", max_retries=0)
def sweep(self: Task) -> dict[str, int]:
    """Beat: re-send runs whose message was lost (broker down, worker killed on a virtual broker)."""
    app = _app(self)
    with transaction(app.runtime.session_factory) as session:
        runs = service.sweep(session, app.settings.triage_requeue_seconds)
    _send_runs(app, runs)
    return {"resent": len(runs)}


@shared_task(bind=True, name="triage.plan_slide", max_retries=MAX_RETRIES)
def plan_slide(self: Task, slide_id: str) -> dict[str, int]:
    app = _app(self)
    runtime = app.runtime
    try:
        with transaction(runtime.session_factory) as session:
            runs = service.slide_runs(session, runtime.registry.active_cards(), slide_id)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from exc
    _send_runs(app, runs)
    return {"runs": len(runs)}


@shared_task(bind=True, name="triage.retriage_model", max_retries=MAX_RETRIES)
def retriage_model(self: Task, name: str, version: str) -> dict[str, int]:
    """Plan a promoted model version on the open cases it applies to."""
    app = _app(self)
    runtime = app.runtime
    card = runtime.registry.get(name, version).card
    try:
        with transaction(runtime.session_factory) as session:
            runs = service.retriage(session, card)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=retry_countdown(self.request.retries)) from exc
    _send_runs(app, runs)
    return {"runs": len(runs)}


Compute = Callable[[Runtime, service.RunInput], service.RunOutcome]


def _execute(task: Task, run_id: str, compute: Compute, queue_name: str) -> dict[str, Any]:
    """Lease, compute, finish; retry transient errors, record permanent ones on the case.

    The lease outlives the queue's hard time limit, so the sweep never re-sends a run that is
    still legitimately running.
    """
    app = _app(task)
    runtime = app.runtime
    queue = QUEUES[queue_name]
    try:
        with transaction(runtime.session_factory) as session:
            job = service.begin_run(
                session, runtime.blob_store, app.settings.data_dir / "slides", run_id, queue.time_limit + 60
            )
        if job is None:
            return {"run_id": run_id, "status": "skipped"}
        outcome = compute(runtime, job)
        with transaction(runtime.session_factory) as session:
            result = service.finish_run(session, runtime.blob_store, job, outcome)
    except TRANSIENT_ERRORS as exc:
        if task.request.retries < MAX_RETRIES:
            log.warning(
                "transient triage error; retrying", extra={"run_id": run_id, "error": type(exc).__name__}
            )
            raise task.retry(exc=exc, countdown=retry_countdown(task.request.retries)) from exc
        return _fail(runtime, run_id, f"gave up after {MAX_RETRIES} retries: {type(exc).__name__}: {exc}")
    except SoftTimeLimitExceeded:
        return _fail(runtime, run_id, f"timed out after {queue.soft_time_limit:.0f} s")
    except Exception as exc:
        log.exception("triage run failed", extra={"run_id": run_id})
        return _fail(runtime, run_id, f"{type(exc).__name__}: {exc}")
    for alert_id in result.alert_ids:
        app.send("alerts.notify", alert_id)
    return {"run_id": run_id, "status": "done", "findings": result.inserted}


def _fail(runtime: Runtime, run_id: str, reason: str) -> dict[str, Any]:
    with transaction(runtime.session_factory) as session:
        service.fail_run(session, run_id, reason)
    return {"run_id": run_id, "status": "failed", "reason": reason}


def _series(runtime: Runtime, job: service.RunInput) -> service.RunOutcome:
    return service.compute_series(runtime.registry, runtime.sessions, job)


def _slide(runtime: Runtime, job: service.RunInput) -> service.RunOutcome:
    return service.compute_slide(runtime.registry, runtime.sessions, job)


@shared_task(bind=True, name="triage.run_series", max_retries=MAX_RETRIES)
def run_series(self: Task, run_id: str) -> dict[str, Any]:
    return _execute(self, run_id, _series, "triage.dicom")


@shared_task(bind=True, name="triage.run_slide", max_retries=MAX_RETRIES)
def run_slide(self: Task, run_id: str) -> dict[str, Any]:
    return _execute(self, run_id, _slide, "triage.wsi")
