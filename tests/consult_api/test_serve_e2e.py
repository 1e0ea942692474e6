"""`hoichan serve` as a real process: first-run bootstrap, then an administrator builds a network
and a referral goes through it over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import dcmtk_tool, free_port

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "bootstrap-password-for-tests"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "HOICHAN_DATA_DIR": str(tmp_path / "var"),
        "HOICHAN_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "HOICHAN_DIMSE_PORT": str(free_port()),
        "HOICHAN_DIMSE_SPOOL_RING_MB": "16",
    }
    env.pop("HOICHAN_DATABASE_URL", None)
    (tmp_path / "dimse_port").write_text(env["HOICHAN_DIMSE_PORT"])
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "consult_api.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not become ready in 60 s")
        yield base, tmp_path
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def dimse_port(workdir: Path) -> str:
    return (workdir / "dimse_port").read_text().strip()


def _login(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = http.post("/api/v1/auth/token", data={"username": username, "password": password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_fresh_install_to_signed_opinion(server: tuple[str, Path]) -> None:
    base, workdir = server
    with httpx.Client(base_url=base, timeout=10) as http:
        admin = _login(http, "admin", ADMIN_PASSWORD)
        central = http.post(
            "/api/v1/facilities",
            json={"code": "BV-TW", "name": "Central Hospital", "tier": "central"},
            headers=admin,
        ).json()
        district = http.post(
            "/api/v1/facilities",
            json={"code": "TTYT-HUYEN", "name": "District Hospital", "tier": "district"},
            headers=admin,
        ).json()
        assert (
            http.put(
                f"/api/v1/facilities/{district['id']}/referrals",
                json={"facility_ids": [central["id"]]},
                headers=admin,
            ).status_code
            == 200
        )
        password = "a-long-enough-password"
        for username, facility, role in [
            ("bs.lan", district, "referrer"),
            ("bs.minh", central, "radiologist"),
        ]:
            created = http.post(
                "/api/v1/users",
                json={
                    "username": username,
                    "full_name": username,
                    "password": password,
                    "facility_id": facility["id"],
                    "roles": [role],
                },
                headers=admin,
            )
            assert created.status_code == 201, created.text
        referrer, radiologist = _login(http, "bs.lan", password), _login(http, "bs.minh", password)

        case = http.post(
            "/api/v1/cases",
            json={
                "kind": "imaging",
                "target_facility_id": central["id"],
                "clinical_question": "Head CT after fall",
                "patient": {"identifier": "P-77", "name": "Tran Thi E2e"},
                "urgent": True,
            },
            headers=referrer,
        ).json()
        assert case["priority"] == "urgent"
        for headers, status in [(referrer, "submitted"), (radiologist, "in_review")]:
            moved = http.post(f"/api/v1/cases/{case['id']}/status", json={"status": status}, headers=headers)
            assert moved.status_code == 200, moved.text
        opinion = http.post(
            f"/api/v1/cases/{case['id']}/opinions", json={"impression": "No bleed"}, headers=radiologist
        ).json()
        signed = http.post(f"/api/v1/cases/{case['id']}/opinions/{opinion['id']}/sign", headers=radiologist)
        assert signed.status_code == 200, signed.text
        assert http.get(f"/api/v1/cases/{case['id']}", headers=referrer).json()["status"] == "concluded"
        assert "hoichan_http_requests_total" in http.get("/metrics").text

        # The DIMSE listener runs inside `hoichan serve` and knows the district's modality.
        node = {"ae_title": "DISTRICT_CT", "may_store": True}
        assert (
            http.post(
                f"/api/v1/facilities/{district['id']}/dicom-nodes", json=node, headers=admin
            ).status_code
            == 201
        )
    echoscu = dcmtk_tool("echoscu")
    if echoscu:
        echo = subprocess.run(
            [echoscu, "-aet", "DISTRICT_CT", "-aec", "HOICHAN", "127.0.0.1", dimse_port(workdir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert echo.returncode == 0, echo.stderr

    env = {**os.environ, "HOICHAN_DATA_DIR": str(workdir / "var")}
    verify = subprocess.run(
        [sys.executable, "-m", "consult_api.cli", "audit", "verify"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    server_log = (workdir / "server.log").read_text()
    assert "Tran Thi E2e" not in server_log
    assert "P-77" not in server_log
