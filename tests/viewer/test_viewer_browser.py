"""The viewer in a real browser (headless Debian chromium, playwright-core), each result checked
through the API with the same user's token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.viewer.conftest import Seeded, bearer, drive

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("browser_ready")]


def test_specialist_reads_windows_and_signs(live: Seeded, shots: Path) -> None:
    result = drive("specialist", live.base, shots, ct_case=live.ct_case)
    assert result["worklist_rows"] >= 1
    assert live.sop_uids[2] in result["scrolled"]  # Slice 3/8 is the third instance by InstanceNumber
    assert "W 1500 / L -600" in result["windowed"]
    assert "overlay off" in result["overlay"]
    assert live.sop_uids[4] in result["finding_slice"]
    headers = bearer(live.base, "rad_c1")
    findings = httpx.get(f"{live.base}/api/v1/cases/{live.ct_case}/findings", headers=headers).json()
    assert [(f["id"], f["state"], f["reviewer"] is not None) for f in findings] == [
        (live.finding_id, "accepted", True)
    ]
    case = httpx.get(f"{live.base}/api/v1/cases/{live.ct_case}", headers=headers).json()
    assert case["status"] == "concluded"
    opinions = httpx.get(f"{live.base}/api/v1/cases/{live.ct_case}/opinions", headers=headers).json()
    assert opinions[0]["status"] == "signed"
    assert opinions[0]["impression"] == "Right lower lobe pneumonia."
    pdf = httpx.get(
        f"{live.base}/api/v1/cases/{live.ct_case}/opinions/{opinions[0]['id']}/pdf", headers=headers
    )
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")


def test_pathologist_pans_and_zooms_a_slide(live: Seeded, shots: Path) -> None:
    result = drive("slide", live.base, shots, slide_case=live.slide_case)
    assert result["after"]["zoom"] > result["before"]["zoom"] * 1.5
    assert (result["after"]["x"], result["after"]["y"]) != (result["before"]["x"], result["before"]["y"])
    tiles = result["tiles"]
    assert tiles
    assert all(t["status"] == 200 for t in tiles)
    assert all(f"/api/v1/slides/{live.slide_id}_files/" in t["url"] for t in tiles)
    levels = {int(t["url"].split("_files/")[1].split("/")[0]) for t in tiles}
    assert len(levels) >= 2  # zooming in fetched deeper pyramid levels from the API


def test_referrer_creates_a_case_and_uploads_a_slide_by_tus(
    live: Seeded, shots: Path, tmp_path: Path
) -> None:
    from tests.consult_api.slides.synthetic import write_generic_tiff

    slide = write_generic_tiff(tmp_path / "referrer-slide.tiff", width=1024, height=768)
    result = drive("referrer", live.base, shots, slide_path=str(slide))
    assert "Worklist" not in result["tabs"]
    assert "Case review" not in result["tabs"]
    assert result["worklist_present"] == 0
    headers = bearer(live.base, "ref_d1")
    cases = httpx.get(f"{live.base}/api/v1/cases", headers=headers).json()["items"]
    created = [c for c in cases if c["clinical_question"] == "Lung nodule on X-ray, please advise"]
    assert len(created) == 1
    slides = httpx.get(f"{live.base}/api/v1/cases/{created[0]['id']}/slides", headers=headers).json()["items"]
    assert [s["filename"] for s in slides] == ["referrer-slide.tiff"]
    assert slides[0]["size"] == slide.stat().st_size


def test_tablet_width_and_vietnamese_labels(live: Seeded, shots: Path) -> None:
    result = drive("tablet", live.base, shots, ct_case=live.ct_case, width=820, height=1180)
    assert "Slice 1/8" in result["first"]
    assert result["vi_tab"] == 1
