"""``hoichan``: the composition root. Every subcommand builds what it needs from ``Settings``."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from consult_api.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from consult_api.dicom.dimse import DimseListener

log = logging.getLogger("consult_api.cli")
Handler = Callable[[argparse.Namespace], int]


def _settings() -> Settings:
    from consult_api.auth.security import set_password_policy

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    set_password_policy(settings.password_policy)
    return settings


def _session_factory(settings: Settings) -> sessionmaker[Session]:
    from consult_api.db import create_db_engine, create_session_factory

    return create_session_factory(create_db_engine(settings.resolved_database_url))


def install_demo_models(settings: Settings) -> None:
    """Register the shipped demo models (trained here on synthetic data; not for clinical use).

    Idempotent, and it never demotes a version someone promoted: a site that has its own models
    keeps them live.
    """
    from models.demo import install_demo_models as install
    from models.registry import ModelRegistry

    installed = install(ModelRegistry(settings.model_registry_dir))
    if installed:
        names = ", ".join(sorted({m.card.name for m in installed}))
        print(f"Demo AI models available (synthetic data, NOT for clinical use): {names}", file=sys.stderr)


def prepare_database(settings: Settings) -> None:
    """Migrate to the latest schema and create the first administrator on a fresh install."""
    from consult_api import bootstrap, migrate
    from consult_api.db import transaction

    migrate.upgrade(settings.resolved_database_url)
    password = (
        settings.bootstrap_admin_password.get_secret_value() if settings.bootstrap_admin_password else None
    )
    with transaction(_session_factory(settings)) as session:
        result = bootstrap.bootstrap(session, settings.data_dir, settings.bootstrap_admin_username, password)
    if result.created:
        where = (
            f"its password is in {result.password_file}"
            if result.password_file
            else "password from HOICHAN_BOOTSTRAP_ADMIN_PASSWORD"
        )
        print(f"First run: created administrator {result.username!r}; {where}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from consult_api.app import create_app
    from consult_api.logs import configure_logging
    from consult_api.worker import spawn_embedded_worker, stop_processes
    from viewer.mount import mount_viewer

    settings = _settings()
    configure_logging(settings.log_level, json_output=settings.log_json)
    prepare_database(settings)
    install_demo_models(settings)
    listener = build_dimse_listener(settings) if settings.dimse_enabled else None
    if listener is not None:
        listener.start()
        print(
            f"DICOM listener {settings.dimse_ae_title} on {settings.dimse_host}:{listener.port}",
            file=sys.stderr,
        )
    # Embedded defaults: the Celery worker (with beat) is ours to run; with a broker server it is not.
    workers = spawn_embedded_worker(settings) if settings.broker_url is None else []
    app = create_app(settings)
    # The viewer is an HTTP client of this same API; mounted, the browser stays on one origin.
    mount_viewer(app, f"http://127.0.0.1:{args.port}")
    print(
        f"Hoichan listening on http://{args.host}:{args.port} (viewer at /viewer, API docs at /docs)",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        stop_processes(workers)
        if listener is not None:
            listener.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker for the given queues (optionally with beat) in this process."""
    from consult_api.logs import configure_logging
    from consult_api.worker import run_worker

    settings = _settings()
    configure_logging(settings.log_level, json_output=settings.log_json)
    run_worker(settings, queues=args.queues.split(",") if args.queues else None, beat=args.beat)
    return 0


def build_dimse_listener(settings: Settings, port: int | None = None) -> DimseListener:
    """The DIMSE listener with its own engine: its threads must not share the API's pool."""
    from consult_api.dicom.dimse import DimseListener
    from consult_api.storage.blobs import LocalBlobStore

    return DimseListener(
        _session_factory(settings),
        LocalBlobStore(settings.blob_dir),
        ae_title=settings.dimse_ae_title,
        host=settings.dimse_host,
        port=settings.dimse_port if port is None else port,
        spool_ring_bytes=settings.dimse_spool_ring_mb << 20,
        index_linger_s=settings.dimse_index_linger_seconds,
    )


def cmd_dimse(args: argparse.Namespace) -> int:
    """Run only the DIMSE listener (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) until interrupted."""
    import signal
    import threading

    from consult_api.heap import freeze_startup_heap, hand_off_quickly
    from consult_api.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, json_output=settings.log_json)
    if settings.warm_start:
        hand_off_quickly()
    prepare_database(settings)
    listener = build_dimse_listener(settings, args.port)
    listener.start()
    if settings.freeze_heap:
        freeze_startup_heap()
    print(
        f"DICOM listener {settings.dimse_ae_title} on {settings.dimse_host}:{listener.port}", file=sys.stderr
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from consult_api import bootstrap, migrate
    from consult_api.db import transaction
    from consult_api.errors import HoichanError

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    settings = _settings()
    migrate.upgrade(settings.resolved_database_url)
    try:
        with transaction(_session_factory(settings)) as session:
            user = bootstrap.create_admin(session, args.username, password, args.facility)
    except HoichanError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps({"id": user.id, "username": user.username, "roles": user.roles}))
    return 0


def cmd_audit_verify(_args: argparse.Namespace) -> int:
    from consult_api.audit.service import verify_chain
    from consult_api.db import transaction

    settings = _settings()
    with transaction(_session_factory(settings)) as session:
        report = verify_chain(session)
    for problem in report.problems:
        print(f"audit event #{problem.event_id}: {problem.reason}")
    print(f"{report.checked} audit events checked: {'chain intact' if report.ok else 'TAMPERING DETECTED'}")
    return 0 if report.ok else 2


def cmd_export_training(args: argparse.Namespace) -> int:
    """Write a de-identified training export of confirmed findings into OUT (run as system admin)."""
    from datetime import datetime

    from consult_api.access import Principal, Role
    from consult_api.db import transaction
    from consult_api.exports.service import export_training
    from consult_api.slides.service import SlideFiles
    from consult_api.storage.blobs import LocalBlobStore

    settings = _settings()
    since = datetime.fromisoformat(args.since) if args.since else None
    operator = Principal(
        kind="cli", id="export-training", facility_id="", roles=frozenset({Role.admin}), name="cli"
    )
    with transaction(_session_factory(settings)) as session:
        result = export_training(
            session,
            operator,
            LocalBlobStore(settings.blob_dir),
            SlideFiles(settings.data_dir / "slides"),
            Path(args.out),
            since=since,
        )
    print(
        json.dumps(
            {
                "folder": str(result.folder),
                "items": result.items,
                "series": result.series,
                "slides": result.slides,
                "instances": result.instances,
                "skipped": len(result.skipped),
            }
        )
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from consult_api import migrate

    migrate.upgrade(_settings().resolved_database_url, args.revision)
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from consult_api import migrate

    migrate.downgrade(_settings().resolved_database_url, args.revision)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoichan", description="Hoichan tele-consultation service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the whole service on this machine (embedded defaults)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser("worker", help="run a Celery worker (triage, alerts) for this deployment")
    worker.add_argument("--queues", help="comma-separated (default: ingest,triage.dicom,triage.wsi,batch)")
    worker.add_argument("--beat", action="store_true", help="also run the periodic scheduler (one per site)")
    worker.set_defaults(handler=cmd_worker)

    dimse = sub.add_parser("dimse", help="run only the DICOM DIMSE listener")
    dimse.add_argument("--port", type=int, default=None, help="listening port (default HOICHAN_DIMSE_PORT)")
    dimse.set_defaults(handler=cmd_dimse)

    admin = sub.add_parser("create-admin", help="create an administrator account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    admin.add_argument("--facility", help="facility code (default: the network-operations facility)")
    admin.set_defaults(handler=cmd_create_admin)

    audit = sub.add_parser("audit", help="audit trail tools").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser(
        "verify", help="check the hash chain; exit 2 and name the rows if tampered"
    ).set_defaults(handler=cmd_audit_verify)

    export = sub.add_parser("export-training", help="de-identified export of confirmed findings for training")
    export.add_argument("out", help="an empty or new folder")
    export.add_argument("--since", help="only findings reviewed at or after this ISO date-time (with zone)")
    export.set_defaults(handler=cmd_export_training)

    db = sub.add_parser("db", help="database schema migrations").add_subparsers(
        dest="db_command", required=True
    )
    up = db.add_parser("upgrade", help="migrate to a revision (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=cmd_db_upgrade)
    down = db.add_parser("downgrade", help="migrate down to a revision")
    down.add_argument("revision")
    down.set_defaults(handler=cmd_db_downgrade)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Commands owned by other packages, wired here so ``hoichan`` stays the one entry point."""
    from consult_api.slides.cli import add_demo_slide_command
    from consult_api.triage.cli import add_triage_commands
    from models.cli import add_models_commands
    from training.cli import add_training_commands
    from viewer.cli import add_viewer_commands

    add_models_commands(sub)
    add_training_commands(sub)
    add_demo_slide_command(sub)
    add_triage_commands(sub)
    add_viewer_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
