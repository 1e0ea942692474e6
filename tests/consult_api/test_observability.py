"""Health probes, Prometheus metrics, problem documents and logs without patient data."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from consult_api.logs import JsonFormatter, configure_logging
from tests.conftest import PATIENT, Actors, Network, new_case

URL_LOGGING_CLIENTS = ("httpx", "httpcore.connection", "httpx2", "httpcore2.connection")


def test_configured_logging_silences_url_logging_clients() -> None:
    root = logging.getLogger()
    clients = [logging.getLogger(name) for name in URL_LOGGING_CLIENTS]
    saved = root.handlers[:], root.level, [c.level for c in clients]
    try:
        configure_logging("INFO")
        for client_logger in clients:
            assert not client_logger.isEnabledFor(logging.INFO), client_logger.name
        assert logging.getLogger("uvicorn.access").disabled
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for client_logger, level in zip(clients, saved[2], strict=True):
            client_logger.setLevel(level)
        logging.getLogger("uvicorn.access").disabled = False


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"database": "ok", "storage": "ok"}


def test_metrics_count_requests_by_route_template(client: TestClient, as_: Actors, network: Network) -> None:
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    client.get(f"/api/v1/cases/{case['id']}", headers=as_["ref_d1"])
    body = client.get("/metrics").text
    assert (
        'hoichan_http_requests_total{method="GET",route="/api/v1/cases/{case_id}",status="200"} 1.0' in body
    )
    assert str(case["id"]) not in body


def test_unknown_route_is_a_problem_document(client: TestClient) -> None:
    response = client.get("/api/v1/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_security_headers(client: TestClient) -> None:
    headers = client.get("/healthz").headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Request-ID" in headers


def test_logs_carry_no_patient_data(
    client: TestClient, as_: Actors, network: Network, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    case = new_case(client, as_["ref_d1"], network.fid("C1"))
    client.get(f"/api/v1/cases/{case['id']}", headers=as_["ref_d1"])
    client.get("/api/v1/cases", params={"q": PATIENT["name"]}, headers=as_["ref_d1"])
    formatter = JsonFormatter()
    # The test's own HTTP client (httpx) logs request URLs; configure_logging silences it in the service.
    lines = [formatter.format(record) for record in caplog.records if not record.name.startswith("httpx")]
    assert any(json.loads(line).get("route") == "/api/v1/cases/{case_id}" for line in lines)
    text = "\n".join(lines)
    for secret in (PATIENT["name"], PATIENT["identifier"], "Testpatient"):
        assert secret not in text
