"""A real server for the browser tests: the API and the mounted viewer in one uvicorn process on a
free port, a seeded referral network, a CT series on an imaging case and a slide on a pathology case.
Headless Debian chromium is driven by playwright-core from ``viewer/node_modules`` (``driver.cjs``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from consult_api.app import create_app
from consult_api.config import Settings
from consult_api.findings.models import Finding
from datasets.synthetic.ct import write_ct_series
from tests.conftest import PASSWORD, PATIENT, Network, free_port
from tests.consult_api.slides.conftest import metadata, sha256_header
from tests.consult_api.slides.synthetic import write_generic_tiff
from viewer.mount import mount_viewer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = ROOT / "viewer" / "node_modules" / "playwright-core"
DRIVER = Path(__file__).with_name("driver.cjs")


@dataclass
class Seeded:
    base: str
    ct_case: str
    slide_case: str
    slide_id: str
    other_case: str
    sop_uids: list[str]
    finding_id: str


def token(base: str, username: str) -> str:
    response = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


def bearer(base: str, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(base, username)}"}


def _case(
    base: str, headers: dict[str, str], target: str, kind: str, question: str, patient: dict[str, Any]
) -> str:
    body = {"kind": kind, "target_facility_id": target, "patient": patient, "clinical_question": question}
    response = httpx.post(f"{base}/api/v1/cases", json=body, headers=headers)
    response.raise_for_status()
    case_id = str(response.json()["id"])
    httpx.post(
        f"{base}/api/v1/cases/{case_id}/status", json={"status": "submitted"}, headers=headers
    ).raise_for_status()
    return case_id


def _upload_ct(base: str, headers: dict[str, str], case_id: str, folder: Path) -> None:
    rng = np.random.default_rng(11)
    slices = rng.normal(40, 300, size=(8, 64, 64)).astype(np.int16)
    write_ct_series(
        slices,
        folder,
        spacing_mm=(2.5, 0.7, 0.7),
        patient_name="NGUYEN^VAN",
        patient_id=PATIENT["identifier"],
    )
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in sorted(folder.rglob("*.dcm"))]
    response = httpx.post(f"{base}/api/v1/cases/{case_id}/dicom", files=files, headers=headers, timeout=60)
    response.raise_for_status()
    assert response.json()["stored"] == 8


def _upload_slide(base: str, headers: dict[str, str], case_id: str, path: Path) -> str:
    data = path.read_bytes()
    tus = {"Tus-Resumable": "1.0.0"}
    created = httpx.post(
        f"{base}/uploads",
        headers={
            **headers,
            **tus,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename=path.name, case_id=case_id),
        },
    )
    assert created.status_code == 201, created.text
    done = httpx.patch(
        f"{base}{created.headers['Location']}"
        if created.headers["Location"].startswith("/")
        else created.headers["Location"],
        content=data,
        headers={
            **headers,
            **tus,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": sha256_header(data),
        },
        timeout=60,
    )
    assert done.status_code == 204, done.text
    return done.headers["Slide-Location"].rsplit("/", 1)[-1]


def _seed_finding(factory: sessionmaker[Session], case_id: str, sop_uid: str) -> str:
    """A model finding on slice 5, as the triage worker would have written it."""
    with factory.begin() as session:
        finding = Finding(
            case_id=case_id,
            model_name="chest-ct-demo",
            model_version="1.0.0",
            input_checksum="0" * 64,
            label="consolidation",
            score=0.91,
            priority="urgent",
            location={
                "slice_index": 4,
                "sop_instance_uid": sop_uid,
                "bbox": {"x": 10, "y": 12, "width": 20, "height": 16},
            },
        )
        session.add(finding)
        session.flush()
        return str(finding.id)


def _sop_order(base: str, headers: dict[str, str]) -> list[str]:
    accept = {"Accept": "application/dicom+json"}
    studies = httpx.get(
        f"{base}/dicom-web/studies",
        params={"PatientID": PATIENT["identifier"]},
        headers={**headers, **accept},
    ).json()
    study = studies[0]["0020000D"]["Value"][0]
    series = httpx.get(f"{base}/dicom-web/studies/{study}/series", headers={**headers, **accept}).json()
    uid = series[0]["0020000E"]["Value"][0]
    items = httpx.get(
        f"{base}/dicom-web/studies/{study}/series/{uid}/instances", headers={**headers, **accept}
    ).json()
    items.sort(key=lambda i: int(i["00200013"]["Value"][0]))
    return [i["00080018"]["Value"][0] for i in items]


@pytest.fixture
def live(
    settings: Settings,
    network: Network,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Seeded]:
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(settings)
    mount_viewer(app, base)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    ref = bearer(base, "ref_d1")
    ct_case = _case(base, ref, network.fid("C1"), "imaging", "Suspected pneumonia, chest CT", PATIENT)
    _upload_ct(base, ref, ct_case, tmp_path / "ct")
    slide_case = _case(
        base,
        ref,
        network.fid("C1"),
        "pathology",
        "Biopsy: grade the tumour",
        {"identifier": "D1-000777", "name": "Tran Thi Slide"},
    )
    slide_id = _upload_slide(base, ref, slide_case, write_generic_tiff(tmp_path / "slide.tiff"))
    other = _case(
        base,
        bearer(base, "ref_d2"),
        network.fid("C2"),
        "imaging",
        "Another facility's case",
        {"identifier": "D2-1", "name": "Le Van Other"},
    )
    sop_uids = _sop_order(base, ref)
    finding_id = _seed_finding(session_factory, ct_case, sop_uids[4])
    yield Seeded(base, ct_case, slide_case, slide_id, other, sop_uids, finding_id)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Skip (with the reason) when the browser, node or playwright-core is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (scripts/system-deps chromium)")
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not PLAYWRIGHT.is_dir():
        pytest.skip("playwright-core is not installed (npm ci --prefix viewer)")


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def drive(scenario: str, base: str, shots: Path, timeout: float = 60, **params: Any) -> dict[str, Any]:
    """Run one scenario of ``driver.cjs`` in headless chromium; its JSON result, screenshots printed."""
    config = {
        "scenario": scenario,
        "base": base,
        "shots": str(shots),
        "params": params,
        "chromium": str(CHROMIUM),
    }
    env = {**os.environ, "NODE_PATH": str(ROOT / "viewer" / "node_modules")}
    done = subprocess.run(
        ["node", str(DRIVER), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    for line in done.stdout.splitlines():
        if line.startswith("SHOT "):
            print("screenshot:", line[5:])
    assert done.returncode == 0, f"driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert lines, f"driver printed no result:\n{done.stdout[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1][7:])
    return result
