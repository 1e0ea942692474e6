"""The audit chain: every change and read of patient data leaves a verifiable trace."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from consult_api.audit import service as audit
from consult_api.audit.models import GENESIS_HASH, AuditEvent
from consult_api.config import Settings
from tests.conftest import Actors, Network, new_case

both_backends = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


def _append(factory: sessionmaker[Session], n: int) -> None:
    with factory.begin() as session:
        for i in range(n):
            audit.record(session, None, "test.event", "case", f"case-{i}", detail={"i": i})


@both_backends
def test_chain_links_each_event_to_the_previous(session_factory: sessionmaker[Session]) -> None:
    _append(session_factory, 5)
    with session_factory() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert events[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        assert audit.verify_chain(session).ok


@both_backends
def test_edited_row_is_named(session_factory: sessionmaker[Session]) -> None:
    _append(session_factory, 6)
    with session_factory.begin() as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == 3).values(detail={"i": 99}))
    with session_factory() as session:
        report = audit.verify_chain(session)
    assert [(p.event_id, p.reason.split(":")[0]) for p in report.problems] == [(3, "content changed")]


@both_backends
def test_deleted_row_breaks_the_next_link(session_factory: sessionmaker[Session]) -> None:
    _append(session_factory, 6)
    with session_factory.begin() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.id == 4))
    with session_factory() as session:
        report = audit.verify_chain(session)
    assert [p.event_id for p in report.problems] == [5]
    assert "#3 and #5" in report.problems[0].reason


def test_reads_of_patient_data_are_audited(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))

    def count(action: str) -> int:
        with session_factory() as session:
            query = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
            return session.scalar(query) or 0

    before = count("case.read")
    client.get(f"/api/v1/cases/{case['id']}", headers=as_["ref_d1"])
    client.get("/api/v1/cases", headers=as_["ref_d1"])
    assert count("case.read") == before + 1
    assert count("case.list") >= 1
    with session_factory() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "case.read")).one()
    assert event.actor == f"user:{network.uid('ref_d1')}"
    assert event.case_id == case["id"]
    # Audit rows carry ids, never patient names or identifiers.
    with session_factory() as session:
        dump = " ".join(str(e.detail) + e.action for e in session.scalars(select(AuditEvent)))
    assert "Testpatient" not in dump
    assert "D1-000123" not in dump


def test_cli_audit_verify_exit_codes(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _append(session_factory, 3)
    env = {
        **os.environ,
        "HOICHAN_DATABASE_URL": settings.resolved_database_url,
        "HOICHAN_DATA_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "consult_api.cli", "audit", "verify"]
    ok = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "3 audit events checked: chain intact" in ok.stdout

    with session_factory.begin() as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(actor="user:intruder"))
    bad = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "audit event #2: content changed" in bad.stdout
    assert "TAMPERING DETECTED" in bad.stdout
