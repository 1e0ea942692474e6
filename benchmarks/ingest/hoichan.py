"""Hoichan as the benchmark's system under test (``hoichan serve``: API + DIMSE listener).

A fresh data directory per start (SQLite, blob store, generated secret), then the setup
hook does what an operator would: sign in as the bootstrap administrator, register a
district facility, issue it an upload-gateway API key (STOW-RS and QIDO go with
``X-API-Key``) and register the benchmark's calling AE title for it (unknown AEs are
rejected). Built on the public API only, so it follows the service as it changes.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from benchmarks.ingest.harness import RunningServer, ServerSpec

CALLING_AE = "BENCHSCU"


def hoichan_command() -> list[str]:
    """``hoichan serve`` from the current environment (the venv's script, else the module)."""
    script = shutil.which("hoichan") or str(Path(sys.executable).with_name("hoichan"))
    if Path(script).exists():
        return [script, "serve", "--host", "{bind_host}", "--port", "{http_port}"]
    return [
        sys.executable,
        "-m",
        "consult_api.cli",
        "serve",
        "--host",
        "{bind_host}",
        "--port",
        "{http_port}",
    ]


def hoichan_spec(
    name: str = "hoichan", *, http_port: int = 8000, dimse_port: int = 11112, ae_title: str = "HOICHAN"
) -> ServerSpec:
    """A ``ServerSpec`` for ``hoichan serve`` with its own data directory and a provisioned AE."""
    admin_password = secrets.token_urlsafe(18)

    def setup(server: RunningServer) -> Mapping[str, str]:
        base = f"{server.base_url}/api/v1"
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{base}/auth/token", data={"username": "admin", "password": admin_password})
            r.raise_for_status()
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = client.post(
                f"{base}/facilities",
                json={"code": "BENCH-DISTRICT", "name": "Benchmark district hospital", "tier": "district"},
                headers=auth,
            )
            r.raise_for_status()
            facility_id = r.json()["id"]
            r = client.post(f"{base}/facilities/{facility_id}/api-keys", json={"name": "bench"}, headers=auth)
            r.raise_for_status()
            key = r.json()["key"]
            r = client.post(
                f"{base}/facilities/{facility_id}/dicom-nodes",
                json={"ae_title": CALLING_AE, "may_store": True, "may_query": False},
                headers=auth,
            )
            r.raise_for_status()
        return {"X-API-Key": key}

    return ServerSpec(
        name=name,
        command=hoichan_command(),
        http_port=http_port,
        dimse_port=dimse_port,
        called_ae=ae_title,
        stow_path="/dicom-web/studies",
        qido_root="/dicom-web",
        env={
            "HOICHAN_DATA_DIR": "{workdir}/data",
            "HOICHAN_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "HOICHAN_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
            "HOICHAN_DIMSE_ENABLED": "true",
            "HOICHAN_DIMSE_HOST": "{bind_host}",
            "HOICHAN_DIMSE_PORT": "{dimse_port}",
            "HOICHAN_DIMSE_AE_TITLE": ae_title,
        },
        ready_path="/readyz",
        setup=setup,
        startup_timeout_s=120.0,
    )
