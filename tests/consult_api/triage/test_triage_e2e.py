"""End to end with real processes: STOW a CT series -> study completes on beat -> the worker triages
it -> findings, SR in the study, priority, ``triaged``; re-delivery; a model that raises; kill -9."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from consult_api.dicom.models import Series, Study
from consult_api.findings.models import Finding
from consult_api.triage.models import RunState, TriageRun
from datasets.synthetic.ct import write_ct_series
from models.registry import ModelRegistry
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.dicom.conftest import stow
from tests.consult_api.triage.conftest import (
    classifier_onnx,
    ct_card,
    install,
    producer,
    wait_for,
)

pytestmark = [pytest.mark.integration]


def ct_files(folder: Path, seed: int, blob: bool = True) -> list[bytes]:
    hu = np.full((8, 32, 32), 40, dtype=np.int16)
    if blob:
        hu[3:5, 10:15, 12:18] = 1000
    info = write_ct_series(hu, folder, spacing_mm=(2.5, 0.8, 0.8), uid_seed=seed, patient_id=f"P{seed}")
    return [Path(p).read_bytes() for p in info.paths]


def submitted_case(client: TestClient, as_: Actors, network: Network) -> str:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    move(client, as_["ref_d1"], case["id"], "submitted")
    return str(case["id"])


def upload(client: TestClient, as_: Actors, case_id: str, files: list[bytes]) -> None:
    response = stow(client, as_["ref_d1"], files, url=f"/dicom-web/studies?case={case_id}")
    assert response.status_code == 200, response.text


def findings_of(client: TestClient, as_: Actors, case_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/cases/{case_id}/findings", headers=as_["rad_c1"])
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def timeline_types(client: TestClient, as_: Actors, case_id: str) -> list[str]:
    events = client.get(f"/api/v1/cases/{case_id}/timeline", headers=as_["rad_c1"]).json()
    return [e["type"] for e in events]


def test_stow_series_is_triaged_once_even_when_redelivered(
    client: TestClient,
    as_: Actors,
    network: Network,
    registry: ModelRegistry,
    workers: Any,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    install(registry, ct_card(), classifier_onnx(tmp_path / "cls.onnx"))
    procs = workers()
    procs.start()
    case_id = submitted_case(client, as_, network)
    upload(client, as_, case_id, ct_files(tmp_path / "ct", seed=1))

    found = wait_for(lambda: findings_of(client, as_, case_id), timeout=40)
    assert [(f["label"], f["model_name"], f["model_version"], f["priority"]) for f in found] == [
        ("dense", "ct-dense", "1.0.0", "critical")
    ]
    assert found[0]["score"] > 0.95
    assert found[0]["location"]["slice_index"] in (3, 4)
    assert found[0]["heatmap_sha256"]
    case = client.get(f"/api/v1/cases/{case_id}", headers=as_["rad_c1"]).json()
    assert (case["status"], case["priority"]) == ("triaged", "critical")
    assert "critical_finding" in wait_for(
        lambda: client.get(f"/api/v1/cases/{case_id}", headers=as_["rad_c1"]).json()["alerts"], 10
    )
    worklist = client.get("/api/v1/cases", headers=as_["rad_c1"]).json()["items"]
    assert worklist[0]["id"] == case_id
    with session_factory() as session:  # the SR went into the study as a new series
        modalities = session.scalars(
            select(Series.modality).join(Study).where(Study.case_id == case_id)
        ).all()
        assert sorted(modalities) == ["CT", "SR"]
        run = session.scalars(select(TriageRun)).one()
        assert run.state is RunState.done
        # Our own result objects do not reopen the study (which would plan its triage again).
        study = session.scalars(select(Study).where(Study.case_id == case_id)).one()
        assert study.completed_at is not None
        assert study.number_of_series == 2

    # Re-delivery: the same run sent twice more (as acks_late would) adds no finding and no event.
    with session_factory.begin() as session:
        session.execute(update(TriageRun).values(state=RunState.pending))
    app = producer(procs.env)
    results = [app.send_task("triage.run_series", args=[run.id], queue="triage.dicom") for _ in range(2)]
    statuses = sorted(r.get(timeout=30)["status"] for r in results)
    assert statuses == ["done", "skipped"]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Finding)) == 1
    assert timeline_types(client, as_, case_id).count("ai_findings") == 1


def test_model_that_raises_is_recorded_on_the_case_and_others_still_run(
    client: TestClient,
    as_: Actors,
    network: Network,
    registry: ModelRegistry,
    workers: Any,
    tmp_path: Path,
) -> None:
    install(registry, ct_card("ct-broken"), classifier_onnx(tmp_path / "bad.onnx", channels=3))
    install(registry, ct_card("ct-dense"), classifier_onnx(tmp_path / "cls.onnx"))
    workers().start()
    case_id = submitted_case(client, as_, network)
    upload(client, as_, case_id, ct_files(tmp_path / "ct", seed=2))

    wait_for(lambda: "triage_failed" in timeline_types(client, as_, case_id), timeout=40)
    events = client.get(f"/api/v1/cases/{case_id}/timeline", headers=as_["rad_c1"]).json()
    failure = next(e for e in events if e["type"] == "triage_failed")
    assert "ct-broken@1.0.0" in failure["text"]
    assert "OutputSpecError" in failure["text"]
    runs = client.get(f"/api/v1/cases/{case_id}/triage", headers=as_["rad_c1"]).json()
    wait_for(lambda: len(findings_of(client, as_, case_id)) == 1, timeout=20)
    runs = client.get(f"/api/v1/cases/{case_id}/triage", headers=as_["rad_c1"]).json()
    assert sorted((r["model_name"], r["state"]) for r in runs) == [
        ("ct-broken", "failed"),
        ("ct-dense", "done"),
    ]
    assert client.get(f"/api/v1/cases/{case_id}", headers=as_["rad_c1"]).json()["status"] == "triaged"


def test_worker_killed_mid_task_completes_once_after_restart(
    client: TestClient,
    as_: Actors,
    network: Network,
    registry: ModelRegistry,
    workers: Any,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    install(registry, ct_card(), classifier_onnx(tmp_path / "slow.onnx", slow_matmuls=20))
    procs = workers()
    procs.start()
    case_id = submitted_case(client, as_, network)
    upload(client, as_, case_id, ct_files(tmp_path / "ct", seed=3))

    def running() -> bool:
        with session_factory() as session:
            return session.scalar(select(TriageRun.state)) is RunState.running

    wait_for(running, timeout=30, interval=0.05)
    children = procs.pool_children()
    assert children, procs.log()
    for pid in children:  # the pool process running the task dies (OOM killer, segfault...)
        os.kill(pid, signal.SIGKILL)
    found = wait_for(lambda: findings_of(client, as_, case_id), timeout=60)
    assert len(found) == 1
    with session_factory() as session:
        run = session.scalars(select(TriageRun)).one()
        assert (run.state, run.attempts) == (RunState.done, 2)
    assert timeline_types(client, as_, case_id).count("ai_findings") == 1


def test_runs_planned_while_the_broker_was_unreachable_run_when_a_worker_is_back(
    client: TestClient,
    as_: Actors,
    network: Network,
    registry: ModelRegistry,
    workers: Any,
    settings: Any,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """The upload commits; the run is planned but its message never sent; the sweep sends it."""
    from consult_api.triage import service

    install(registry, ct_card(), classifier_onnx(tmp_path / "cls.onnx"))
    case_id = submitted_case(client, as_, network)
    upload(client, as_, case_id, ct_files(tmp_path / "ct", seed=4))
    with session_factory.begin() as session:  # what beat did before the send failed
        session.execute(update(Study).values(last_instance_at=Study.created_at))
        planned = service.check_studies(session, registry.active_cards(), quiet_seconds=0)
        assert len(planned) == 1
        session.execute(update(TriageRun).values(enqueued_at=None))
    procs = workers(HOICHAN_TRIAGE_REQUEUE_SECONDS="1")
    procs.start()
    assert len(wait_for(lambda: findings_of(client, as_, case_id), timeout=30)) == 1
    assert "resent" in procs.log()
