"""Findings API: who may list and review, review states, agreement per model version, re-triage."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from consult_api.config import Settings
from consult_api.findings.models import Finding
from models.registry import ModelRegistry
from tests.conftest import Actors, Network, move, new_case
from tests.consult_api.triage.conftest import classifier_onnx, ct_card, install


def _case_with_findings(
    client: TestClient, as_: Actors, network: Network, factory: sessionmaker[Session], labels: list[str]
) -> tuple[str, list[str]]:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    move(client, as_["ref_d1"], case["id"], "submitted")
    with factory.begin() as session:
        rows = [
            Finding(
                case_id=str(case["id"]),
                model_name="ct-dense",
                model_version="1.0.0",
                input_checksum="a" * 64,
                label=label,
                score=0.9,
                priority="urgent",
            )
            for label in labels
        ]
        session.add_all(rows)
    return str(case["id"]), [r.id for r in rows]


def test_specialists_review_and_ml_engineers_see_agreement(
    client: TestClient, as_: Actors, network: Network, session_factory: sessionmaker[Session]
) -> None:
    case_id, (f1, f2, f3) = _case_with_findings(client, as_, network, session_factory, ["a", "b", "c"])
    base = f"/api/v1/cases/{case_id}/findings"
    assert len(client.get(base, headers=as_["ref_d1"]).json()) == 3  # the referrer sees them
    assert client.get(base, headers=as_["rad_c2"]).status_code == 404  # another hospital does not
    assert client.post(f"{base}/{f1}/accept", json={}, headers=as_["ref_d1"]).status_code == 403

    accepted = client.post(f"{base}/{f1}/accept", json={"comment": "agree"}, headers=as_["rad_c1"])
    assert accepted.status_code == 200
    assert accepted.json()["state"] == "accepted"
    assert accepted.json()["reviewer"].startswith("user:")
    assert client.post(f"{base}/{f2}/reject", json={}, headers=as_["rad_c1"]).json()["state"] == "rejected"
    assert client.post(f"{base}/{f3}/amend", json={}, headers=as_["rad_c1"]).status_code == 409
    amend = {
        "label": "nodule",
        "region": {"bbox": {"x": 1, "y": 2, "width": 3, "height": 4}, "slice_index": 5},
    }
    amended = client.post(f"{base}/{f3}/amend", json=amend, headers=as_["rad_c1"]).json()
    assert (amended["state"], amended["amended_label"]) == ("amended", "nodule")
    assert amended["amended_location"]["bbox"] == {"x": 1, "y": 2, "width": 3, "height": 4}

    assert client.get("/api/v1/models/agreement", headers=as_["rad_c1"]).status_code == 403
    stats = client.get("/api/v1/models/agreement", headers=as_["ml_c1"]).json()
    assert len(stats) == 1
    assert {k: stats[0][k] for k in ("model_name", "model_version", "findings", "reviewed", "accepted")} == {
        "model_name": "ct-dense",
        "model_version": "1.0.0",
        "findings": 3,
        "reviewed": 3,
        "accepted": 1,
    }
    assert abs(stats[0]["agreement"] - 1 / 3) < 1e-9


def test_retriage_only_for_promoted_versions_and_ml_roles(
    client: TestClient, as_: Actors, network: Network, settings: Settings, tmp_path: Path
) -> None:
    registry = ModelRegistry(settings.model_registry_dir)
    registry.register(ct_card(version="2.0.0"), classifier_onnx(tmp_path / "c.onnx"))
    url = "/api/v1/models/ct-dense/versions/2.0.0/retriage"
    assert client.post(url, headers=as_["rad_c1"]).status_code == 403
    assert client.post(url, headers=as_["ml_c1"]).status_code == 409  # still a candidate
    assert client.post("/api/v1/models/nope/versions/1/retriage", headers=as_["ml_c1"]).status_code == 404
    install(ModelRegistry(tmp_path / "other"), ct_card(version="2.0.0"), tmp_path / "c.onnx")
    registry.promote("ct-dense", "2.0.0")
    response = client.post(url, headers=as_["ml_c1"])
    assert response.status_code == 202
    assert response.json() == {"model": "ct-dense@2.0.0", "queued": True}
    queued = list((settings.data_dir / "celery" / "broker" / "in").glob("*.msg"))
    assert len(queued) == 1
    assert "triage.retriage_model" in queued[0].read_text()
