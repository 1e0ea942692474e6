"""Fixtures for video sessions: a submitted case seen by two facilities, a live server, helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from consult_api.app import create_app
from consult_api.config import Settings
from tests.conftest import PASSWORD, Actors, Network, free_port, move, new_case


@pytest.fixture
def case_id(client: TestClient, as_: Actors, network: Network) -> str:
    """An imaging case from D1 to C1, submitted: D1's referrers and C1's radiologists see it."""
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    move(client, as_["ref_d1"], case["id"], "submitted")
    return str(case["id"])


def open_session(
    client: TestClient | httpx.Client,
    headers: dict[str, str],
    case_id: str,
    invitees: list[dict[str, str]] | None = None,
    **extra: object,
) -> dict[str, object]:
    body = {"title": "Chest CT review", "invitees": invitees or [], **extra}
    response = client.post(f"/api/v1/cases/{case_id}/sessions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def join(
    client: TestClient | httpx.Client, headers: dict[str, str], session_id: object, **body: object
) -> dict[str, object]:
    response = client.post(f"/api/v1/sessions/{session_id}/join", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


class LiveServer:
    """A uvicorn server in a thread, with bearer headers per username."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10)
        self._headers: dict[str, dict[str, str]] = {}

    @property
    def ws_base(self) -> str:
        return self.base.replace("http://", "ws://", 1)

    def __getitem__(self, username: str) -> dict[str, str]:
        if username not in self._headers:
            response = self.http.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            response.raise_for_status()
            self._headers[username] = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return self._headers[username]


def serve(settings: Settings, host: str = "127.0.0.1") -> Iterator[LiveServer]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    live = LiveServer(f"http://{host}:{port}")
    yield live
    live.http.close()
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def live(settings: Settings, network: Network, case_id: str) -> Iterator[LiveServer]:
    yield from serve(settings)


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice skips 127.0.0.1; offer only loopback so test media never leaves the machine."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
