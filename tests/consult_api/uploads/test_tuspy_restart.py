"""A real tus client (tuspy) against a real uvicorn process: an upload is interrupted, the server is
killed (``SIGKILL``) in the middle of a PATCH, restarted, and the same client resumes from the last
committed offset; the slide that comes out is byte-identical to the file."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusUploadFailed
from tusclient.uploader import Uploader

from consult_api.config import Settings
from consult_api.uploads.storage import UploadStore
from tests.conftest import PASSWORD, Network, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHUNK = 256 * 1024


class Sha256Uploader(Uploader):
    """tuspy sends sha1 checksums by default; ours is sha256 (sha1 is accepted too)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


class Server:
    """``uvicorn consult_api.app:create_app --factory`` on the test's database and data folder."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "HOICHAN_DATA_DIR": str(settings.data_dir),
            "HOICHAN_DATABASE_URL": settings.resolved_database_url,
            "HOICHAN_SECRET_KEY": settings.signing_key,
            "HOICHAN_LOG_LEVEL": "WARNING",
        }
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "consult_api.app:create_app",
            "--factory",
            "--port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            command, cwd=self.workdir, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail("uvicorn did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def server(settings: Settings, network: Network, tmp_path: Path) -> Iterator[Server]:
    server = Server(settings, tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=20)


def _login(base: str, username: str) -> dict[str, str]:
    response = httpx.post(f"{base}/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _case(base: str, headers: dict[str, str], target: str) -> str:
    body = {
        "kind": "pathology",
        "target_facility_id": target,
        "patient": {"identifier": "D1-7", "name": "Test Patient"},
        "clinical_question": "Margins?",
    }
    case = httpx.post(f"{base}/api/v1/cases", json=body, headers=headers).json()
    return str(case["id"])


def _kill_mid_patch(server: Server, url: str, headers: dict[str, str], offset: int, remaining: int) -> None:
    """Start a PATCH for the rest of the file, send all but 1 KiB of it as junk, and SIGKILL the
    server while it waits for the last bytes (over 1 MiB has been written past the offset by then)."""
    path = url.split(str(server.port), 1)[1]
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        f"Authorization: {headers['Authorization']}\r\nUpload-Offset: {offset}\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {remaining}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + b"\xff" * (remaining - 1024))
        time.sleep(0.5)
        server.kill()


def test_interrupted_upload_resumes_after_a_restart(
    server: Server, settings: Settings, network: Network, svs_path: Path
) -> None:
    headers = _login(server.base, "ref_d1")
    case_id = _case(server.base, headers, network.fid("C1"))
    client = tus_client.TusClient(f"{server.base}/uploads", headers=headers)
    metadata = {"filename": svs_path.name, "case_id": case_id}

    first = Sha256Uploader(
        file_path=str(svs_path), client=client, chunk_size=CHUNK, metadata=metadata, upload_checksum=True
    )
    first.upload(stop_at=3 * CHUNK)
    assert first.offset == 3 * CHUNK
    url = str(first.url)
    upload_id = url.rsplit("/", 1)[1]
    data_file = UploadStore(settings.data_dir / "uploads").data_path(upload_id)

    _kill_mid_patch(server, url, headers, first.offset, svs_path.stat().st_size - first.offset)
    assert data_file.stat().st_size > 3 * CHUNK, "the killed PATCH should have left junk past the offset"
    server.start()

    resumed = Sha256Uploader(
        file_path=str(svs_path),
        client=client,
        url=url,
        chunk_size=CHUNK,
        metadata=metadata,
        upload_checksum=True,
    )
    assert resumed.offset == 3 * CHUNK
    resumed.upload()
    assert resumed.request is not None
    slide_path = resumed.request.response_headers["slide-location"]
    slide = httpx.get(f"{server.base}{slide_path}", headers=headers).json()
    assert slide["blob_sha256"] == hashlib.sha256(svs_path.read_bytes()).hexdigest()
    assert slide["vendor"] == "aperio"
    assert not data_file.exists()


def test_sha1_from_stock_tuspy_and_checksum_mismatch(
    server: Server, network: Network, svs_path: Path
) -> None:
    headers = _login(server.base, "ref_d1")
    case_id = _case(server.base, headers, network.fid("C1"))
    client = tus_client.TusClient(f"{server.base}/uploads", headers=headers)
    uploader = client.uploader(
        file_path=str(svs_path),
        chunk_size=CHUNK,
        metadata={"filename": "a.svs", "case_id": case_id},
        upload_checksum=True,
    )
    uploader.upload(stop_at=CHUNK)
    assert uploader.get_offset() == CHUNK

    class InTransitCorruption(Sha256Uploader):
        """The digest covers other bytes than those that arrive, as after corruption on the wire."""

        CHECKSUM_ALGORITHM_PAIR = ("sha256", lambda data: hashlib.sha256(data + b"bit flip"))

    liar = InTransitCorruption(
        file_path=str(svs_path), client=client, url=str(uploader.url), chunk_size=CHUNK
    )
    liar.upload_checksum = True
    with pytest.raises(TusUploadFailed) as failure:
        liar.upload_chunk()
    assert failure.value.status_code == 460
    assert uploader.get_offset() == CHUNK
