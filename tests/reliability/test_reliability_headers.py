"""Security headers on every kind of response, HSTS in production, and CORS settings."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from consult_api.app import create_app
from consult_api.config import Mode, Settings
from consult_api.observability import API_CSP
from tests.conftest import Actors, Network

ALLOWED = "https://viewer.hospital.example"


def _client(settings: Settings, **update: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)))


def test_api_responses_carry_a_strict_csp(client: TestClient, as_: Actors, network: Network) -> None:
    for response in (
        client.get("/healthz"),
        client.get("/api/v1/cases", headers=as_["ref_d1"]),
        client.get("/api/v1/cases"),  # 401 problem+json
        client.get("/no/such/route"),  # 404 problem+json
        client.get("/openapi.json"),
    ):
        assert response.headers["Content-Security-Policy"] == API_CSP, response.request.url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert "Strict-Transport-Security" not in response.headers  # development mode


def test_pages_keep_their_own_policy(client: TestClient) -> None:
    """The API docs and the session page (own CSP) are not broken by the API policy."""
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "Content-Security-Policy" not in docs.headers  # Swagger UI loads its bundle from a CDN
    page = client.get("/api/v1/sessions/any-session/page")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = client.get("/api/v1/sessions/assets/session.js")
    assert script.status_code == 200
    assert "Content-Security-Policy" not in script.headers


def test_mounted_viewer_paths_get_no_api_policy(settings: Settings) -> None:
    app = create_app(settings)
    viewer = FastAPI()

    @viewer.get("/")
    def page() -> HTMLResponse:
        return HTMLResponse("<html></html>")

    @viewer.get("/config")
    def config() -> dict[str, str]:
        return {"gradio": "json"}

    app.mount("/viewer", viewer)
    with TestClient(app) as client:
        for path in ("/viewer/", "/viewer/config"):
            response = client.get(path)
            assert response.status_code == 200
            assert "Content-Security-Policy" not in response.headers
            assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_hsts_only_in_production(settings: Settings) -> None:
    with _client(settings, mode=Mode.production) as client:
        response = client.get("/healthz")
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert client.get("/docs").headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.fixture
def cors_client(settings: Settings) -> Iterator[TestClient]:
    with _client(settings, cors_origins=[ALLOWED]) as client:
        yield client


def _preflight(
    client: TestClient, path: str, method: str, headers: str, origin: str = ALLOWED
) -> httpx.Response:
    """A browser's CORS preflight for ``method`` with the request ``headers`` (comma-separated)."""
    return client.options(
        path,
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_cors_preflight_allows_configured_origin(cors_client: TestClient) -> None:
    response = _preflight(cors_client, "/api/v1/cases", "POST", "Authorization, Content-Type")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "Access-Control-Allow-Credentials" not in response.headers  # bearer tokens, not cookies


def test_cors_lets_a_viewer_on_another_origin_resume_uploads(cors_client: TestClient) -> None:
    """tus-js-client sends the tus request headers and must read Location and Upload-Offset."""
    tus_headers = "authorization, tus-resumable, upload-offset, upload-checksum"
    preflight = _preflight(cors_client, "/uploads", "PATCH", tus_headers)
    assert preflight.status_code == 200, preflight.text
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert all(h in allowed for h in ("tus-resumable", "upload-offset", "upload-checksum"))
    options = cors_client.options("/uploads", headers={"Origin": ALLOWED})
    exposed = options.headers["Access-Control-Expose-Headers"].lower()
    assert all(h in exposed for h in ("location", "upload-offset", "tus-version", "upload-expires"))


def test_cors_refuses_other_origins_and_headers(cors_client: TestClient) -> None:
    evil = cors_client.options(
        "/api/v1/cases",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert evil.status_code == 400
    assert "Access-Control-Allow-Origin" not in evil.headers
    odd_header = _preflight(cors_client, "/api/v1/cases", "GET", "X-Debug-Impersonate")
    assert odd_header.status_code == 400
    simple = cors_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert simple.status_code == 200
    assert "Access-Control-Allow-Origin" not in simple.headers


def test_cors_simple_request_from_allowed_origin(cors_client: TestClient) -> None:
    response = cors_client.get("/healthz", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Content-Security-Policy"] == API_CSP


def test_no_cors_by_default(client: TestClient) -> None:
    """Without HOICHAN_CORS_ORIGINS, no origin is allowed (same-origin only)."""
    response = client.options(
        "/api/v1/cases", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Origin" not in client.get("/healthz", headers={"Origin": ALLOWED}).headers


def test_cors_origins_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOICHAN_CORS_ORIGINS", f'["{ALLOWED}", "http://localhost:3000"]')
    assert Settings().cors_origins == [ALLOWED, "http://localhost:3000"]
