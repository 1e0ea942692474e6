"""The Celery app: queues, task semantics and the embedded broker, built from ``Settings``.

Nothing is built at import: ``create_celery(settings)`` makes the app, and the module attribute
``app`` (what ``celery -A consult_api.worker worker`` looks up) is created on first access from the
environment (PEP 562 ``__getattr__``). Engines, the blob store and the ONNX session cache are made
lazily per worker process (``HoichanCelery.runtime``), after the prefork pool has forked.

Embedded default: kombu's ``filesystem://`` transport under ``data_dir/celery`` (no broker server).
Measured with a real worker, no-op tasks, acks_late, prefetch 1 (``benchmarks/triage/broker.py``,
2 cores): at a 0.05 s poll filesystem 23.5 tasks/s vs sqla+sqlite 16.2; at 0.01 s 94 vs 41;
publishing 1,000-2,000/s vs ~60/s (one fsynced SQLite commit per message). Both are bounded by the
poll interval, not the disk, and a triage task takes seconds, so either is fast enough; filesystem
wins on the rest: it keeps no delivered rows forever (the SQLAlchemy transport only flips
``visible``), supports fanout (``celery inspect``, Flower events) and takes no SQLite write locks
beside the app's own database. Redis (~430-820/s) and RabbitMQ (~590/s) for scale-out.

Neither virtual transport re-delivers a message whose worker main process was killed -9 (kombu keeps
unacked messages in the worker's memory), so the database keeps the work owed (``TriageRun``) and a
periodic sweep re-sends what is stale; Redis (visibility timeout) and RabbitMQ (acks_late) re-deliver
by themselves. ``HOICHAN_BROKER_URL`` / ``HOICHAN_RESULT_BACKEND`` switch to a broker server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import smtplib
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import beat_init, worker_process_init
from kombu import Queue
from sqlalchemy.exc import OperationalError

from consult_api.config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from consult_api.storage.blobs import LocalBlobStore
    from inference.session import SessionFactory
    from models.registry import ModelRegistry


@dataclass(frozen=True)
class QueueSpec:
    """A queue and the time limits of every task routed to it (soft raises, hard kills the child)."""

    name: str
    soft_time_limit: float
    time_limit: float


QUEUES: dict[str, QueueSpec] = {
    spec.name: spec
    for spec in (
        QueueSpec("ingest", soft_time_limit=60, time_limit=90),
        QueueSpec("triage.dicom", soft_time_limit=600, time_limit=660),
        QueueSpec("triage.wsi", soft_time_limit=1800, time_limit=1900),
        QueueSpec("batch", soft_time_limit=3600, time_limit=3700),
    )
}

TASK_QUEUES: dict[str, str] = {
    "triage.check_studies": "ingest",
    "triage.sweep": "ingest",
    "triage.plan_slide": "ingest",
    "triage.run_series": "triage.dicom",
    "triage.run_slide": "triage.wsi",
    "triage.retriage_model": "batch",
    "alerts.check": "ingest",
    "alerts.notify": "ingest",
}
"""Every task's queue; ``send`` and the routes read it, so a task cannot land on the wrong queue."""

TASK_MODULES = ("consult_api.triage.tasks", "consult_api.alerts.tasks")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,  # database locked / connection lost
    ConnectionError,
    TimeoutError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
)
"""Errors worth retrying with backoff; anything else is a permanent failure recorded on the case."""

MAX_RETRIES = 5
EMBEDDED_POLL_SECONDS = 0.05
PR_SET_PDEATHSIG = 1  # linux/prctl.h: signal the child when its parent dies
"""How often an idle embedded worker lists its queue folders; bounds its throughput at ~1/poll tasks/s."""


def retry_countdown(retries: int) -> float:
    """Exponential backoff: 2, 4, 8 ... seconds, capped at 5 minutes."""
    return float(min(2 ** (retries + 1), 300))


def embedded_broker_dir(settings: Settings) -> Path:
    return (settings.data_dir / "celery" / "broker").resolve()


def broker_settings(settings: Settings) -> dict[str, Any]:
    """Broker URL and transport options: the configured server, or the embedded filesystem broker."""
    if settings.broker_url:
        longest = max(q.time_limit for q in QUEUES.values())
        # Redis re-delivers an unacked message after the visibility timeout: longer than any task.
        return {
            "broker_url": settings.broker_url,
            "broker_transport_options": {"visibility_timeout": longest + 300},
        }
    folder = embedded_broker_dir(settings)
    for sub in ("in", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folder / "in"),
            "data_folder_out": str(folder / "in"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": EMBEDDED_POLL_SECONDS,
        },
    }


class Runtime:
    """What tasks need, built once per worker process on first use (after fork)."""

    def __init__(self, settings: Settings) -> None:
        from consult_api.db import create_db_engine, create_session_factory
        from consult_api.storage.blobs import LocalBlobStore
        from inference.session import SessionFactory
        from models.registry import ModelRegistry

        self.settings = settings
        self.engine: Engine = create_db_engine(
            settings.resolved_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        self.session_factory: sessionmaker[Session] = create_session_factory(self.engine)
        self.blob_store: LocalBlobStore = LocalBlobStore(settings.blob_dir)
        self.registry: ModelRegistry = ModelRegistry(settings.model_registry_dir)
        self.sessions: SessionFactory = SessionFactory(self.registry)


class HoichanCelery(Celery):
    """A Celery app that carries its ``Settings`` and a lazily built per-process ``Runtime``."""

    settings: Settings

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(self.settings)

    def send(self, task_name: str, *args: Any, countdown: float | None = None) -> None:
        """Enqueue by name on the task's queue; callers do this only after their commit."""
        self.send_task(task_name, args=list(args), queue=TASK_QUEUES[task_name], countdown=countdown)


def create_celery(settings: Settings | None = None) -> HoichanCelery:
    """The Celery app for ``settings`` (read from the environment when not given)."""
    settings = settings or Settings()
    celery = HoichanCelery("hoichan", set_as_current=False)
    celery.settings = settings
    # Pool children and embedded beat die with the worker's main process, as it dies with serve.
    worker_process_init.connect(_die_with_parent_signal, weak=False, dispatch_uid="hoichan-pdeathsig")
    beat_init.connect(_die_with_parent_signal, weak=False, dispatch_uid="hoichan-pdeathsig-beat")
    limits = {
        name: {"soft_time_limit": QUEUES[queue].soft_time_limit, "time_limit": QUEUES[queue].time_limit}
        for name, queue in TASK_QUEUES.items()
    }
    celery.conf.update(
        **broker_settings(settings),
        result_backend=settings.result_backend,
        task_ignore_result=settings.result_backend is None,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue="ingest",
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_annotations=limits,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_lost_wait=2.0,  # results live in the database: report a killed child fast, re-deliver
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "study-complete": {
                "task": "triage.check_studies",
                "schedule": timedelta(seconds=settings.triage_poll_seconds),
                "options": {"queue": "ingest", "expires": settings.triage_poll_seconds * 3},
            },
            "triage-sweep": {
                "task": "triage.sweep",
                "schedule": timedelta(
                    seconds=max(settings.triage_poll_seconds, settings.triage_requeue_seconds / 2)
                ),
                "options": {"queue": "ingest"},
            },
            "alerts": {
                "task": "alerts.check",
                "schedule": timedelta(seconds=settings.alert_check_seconds),
                "options": {"queue": "ingest", "expires": settings.alert_check_seconds * 3},
            },
        },
    )
    import importlib

    for module in TASK_MODULES:
        importlib.import_module(module)
    celery.conf.include = list(TASK_MODULES)
    return celery


def __getattr__(name: str) -> Any:
    """``celery -A consult_api.worker`` asks for ``app``: build it from the environment then."""
    if name == "app":
        globals()["app"] = created = create_celery()
        return created
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- processes -----------------------------------------------------------------------------------------


def worker_command(settings: Settings, queues: list[str] | None = None, beat: bool = False) -> list[str]:
    """``celery worker`` (optionally with embedded beat) for the given queues, prefetch 1."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "consult_api.worker",
        "worker",
        "--loglevel",
        settings.log_level,
        "--concurrency",
        str(settings.worker_concurrency),
        "--prefetch-multiplier",
        "1",
        "-Q",
        ",".join(queues or list(QUEUES)),
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        command += ["--beat", "--schedule", str(settings.data_dir.resolve() / "celery" / "beat-schedule")]
    return command


def spawn_embedded_worker(
    settings: Settings, env: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start one worker process with beat inside it (one node, so beat runs exactly once).

    The child reads the same ``HOICHAN_*`` environment as the parent; the data folder and database
    are passed explicitly so a relative ``./var`` resolves the same in both.
    """
    (settings.data_dir / "celery").mkdir(parents=True, exist_ok=True)
    child_env = {
        **os.environ,
        "HOICHAN_DATA_DIR": str(settings.data_dir.resolve()),
        "HOICHAN_DATABASE_URL": settings.resolved_database_url,
        "HOICHAN_MODELS_DIR": str(settings.model_registry_dir.resolve()),
        **(env or {}),
    }
    process = subprocess.Popen(  # noqa: S603 - our own command line
        worker_command(settings, beat=True), env=child_env, preexec_fn=_die_with_parent
    )
    return [process]


def _die_with_parent_signal(**_kwargs: Any) -> None:
    _die_with_parent()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when ``hoichan serve`` dies, even by SIGKILL.

    Without it a killed server leaves an orphan worker consuming the queue with stale settings.
    SIGKILL, not SIGTERM: a warm shutdown can wait forever on a stuck task, and nothing is lost by
    killing (acks_late re-delivers; the TriageRun sweep re-sends). A normal stop of ``hoichan serve``
    still shuts the worker down warmly (``stop_processes``).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM (warm shutdown: running tasks finish), then SIGKILL whatever is still alive."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_worker(settings: Settings, queues: list[str] | None = None, beat: bool = False) -> None:
    """``hoichan worker``: the same worker ``celery -A consult_api.worker worker`` runs, in-process."""
    argv = worker_command(settings, queues, beat)[5:]  # drop "python -m celery -A consult_api.worker"
    create_celery(settings).worker_main(argv)
