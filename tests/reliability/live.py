"""A real server process for reliability tests: start, wait until ready, kill -9, restart, read its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ADMIN_PASSWORD = "reliability-admin-password"
USER_PASSWORD = "a-long-enough-password"


class LiveServer:
    """``python -m consult_api.cli serve`` (or any command) with its output captured to a file."""

    def __init__(self, workdir: Path, env: dict[str, str], command: list[str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HOICHAN_DATA_DIR": str(workdir / "var"),
            "HOICHAN_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "HOICHAN_DIMSE_PORT": str(free_port()),
            "HOICHAN_DIMSE_SPOOL_RING_MB": "16",  # zero-filled at each fresh start: keep it small here
            "HOICHAN_PASSWORD_HASH_TIME_COST": "1",
            "HOICHAN_PASSWORD_HASH_MEMORY_KIB": "1024",
            "HOICHAN_PASSWORD_HASH_PARALLELISM": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.command = command or [sys.executable, "-m", "consult_api.cli", "serve", "--port", "{port}"]
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> LiveServer:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log()[-4000:]}")
            if self.ready():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.log()[-4000:]}")

    def ready(self) -> bool:
        """The API answers ``/readyz``; a server without HTTP overrides this."""
        try:
            return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill9(self) -> None:
        """SIGKILL the whole process group (uvicorn and anything it spawned), no clean-up at all."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout)


def login(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = http.post("/api/v1/auth/token", data={"username": username, "password": password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def build_network(http: httpx.Client) -> dict[str, object]:
    """A central and a district hospital, a referrer, a radiologist and a pathologist."""
    admin = login(http, "admin", ADMIN_PASSWORD)
    central = http.post(
        "/api/v1/facilities", json={"code": "C1", "name": "Central", "tier": "central"}, headers=admin
    ).json()
    district = http.post(
        "/api/v1/facilities", json={"code": "D1", "name": "District", "tier": "district"}, headers=admin
    ).json()
    response = http.put(
        f"/api/v1/facilities/{district['id']}/referrals",
        json={"facility_ids": [central["id"]]},
        headers=admin,
    )
    response.raise_for_status()
    for username, facility, role in [
        ("ref", district, "referrer"),
        ("rad", central, "radiologist"),
        ("path", central, "pathologist"),
    ]:
        created = http.post(
            "/api/v1/users",
            json={
                "username": username,
                "full_name": username,
                "password": USER_PASSWORD,
                "facility_id": facility["id"],
                "roles": [role],
            },
            headers=admin,
        )
        created.raise_for_status()
    return {
        "admin": admin,
        "central": central,
        "district": district,
        **{name: login(http, name, USER_PASSWORD) for name in ("ref", "rad", "path")},
    }
