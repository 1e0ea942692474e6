"""A slide is seen exactly by those who see its case; opening a slide and its label is audited."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consult_api.audit.models import AuditEvent
from tests.conftest import Actors
from tests.consult_api.slides.conftest import tus_create, upload_slide

ROUTES = (
    ".dzi",
    "_files/12/0_0.jpeg",
    "/thumbnail",
    "/associated/label",
    "",
    "/region?x=0&y=0&width=8&height=8",
)


def test_other_facility_gets_404_everywhere(
    client: TestClient, as_: Actors, pathology_case: str, svs_path: Path
) -> None:
    slide = upload_slide(client, as_["ref_d1"], svs_path, pathology_case)
    base = f"/api/v1/slides/{slide['id']}"
    for route in ROUTES:
        assert client.get(base + route, headers=as_["path_c1"]).status_code == 200, route
        for outsider in ("ref_d2", "rad_c2", "fadm_d2"):
            response = client.get(base + route, headers=as_[outsider])
            assert response.status_code == 404, (outsider, route, response.text)
        assert client.get(base + route).status_code == 401, route
    assert client.get("/api/v1/slides", headers=as_["ref_d2"]).json()["total"] == 0
    assert client.get(f"/api/v1/cases/{pathology_case}/slides", headers=as_["ref_d2"]).status_code == 404
    listed = client.get(f"/api/v1/cases/{pathology_case}/slides", headers=as_["path_c1"]).json()
    assert [s["id"] for s in listed["items"]] == [slide["id"]]


def test_outsider_cannot_upload_to_a_case_it_cannot_see(
    client: TestClient, as_: Actors, pathology_case: str
) -> None:
    response = tus_create(client, as_["ref_d2"], 10, pathology_case, "a.svs")
    assert response.status_code == 404
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_opening_and_label_reads_are_audited(
    client: TestClient,
    as_: Actors,
    pathology_case: str,
    svs_path: Path,
    session_factory: sessionmaker[Session],
) -> None:
    slide = upload_slide(client, as_["ref_d1"], svs_path, pathology_case)
    base = f"/api/v1/slides/{slide['id']}"
    client.get(base + ".dzi", headers=as_["path_c1"])
    for _ in range(3):
        client.get(base + "_files/12/1_1.jpeg", headers=as_["path_c1"])
    client.get(base + "/associated/label", headers=as_["path_c1"])
    with session_factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.entity_id == slide["id"])).all()
    actions = [e.action for e in events]
    assert actions.count("slide.open") == 1
    assert actions.count("slide.create") == 1
    label = next(e for e in events if e.action == "slide.associated.read")
    assert label.detail == {"name": "label", "phi": True}
    assert label.case_id == pathology_case
