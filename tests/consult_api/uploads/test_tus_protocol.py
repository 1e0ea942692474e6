"""The tus 1.0 protocol as the app speaks it: creation, offsets, checksums, termination, expiry."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from consult_api.config import Settings
from consult_api.db import utcnow
from consult_api.uploads.storage import UploadStore
from tests.conftest import Actors
from tests.consult_api.slides.conftest import (
    OFFSET_STREAM,
    TUS,
    metadata,
    sha256_header,
    tus_create,
    tus_patch,
)


def _store(settings: Settings) -> UploadStore:
    return UploadStore(settings.data_dir / "uploads")


def test_options_advertises_extensions(client: TestClient) -> None:
    response = client.options("/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert "sha256" in response.headers["Tus-Checksum-Algorithm"]


def test_offsets_checksums_and_head(
    client: TestClient, as_: Actors, pathology_case: str, settings: Settings
) -> None:
    headers = as_["ref_d1"]
    created = tus_create(client, headers, 30, pathology_case, "x.svs")
    assert created.status_code == 201
    assert "Upload-Expires" in created.headers
    url = created.headers["Location"]
    assert tus_patch(client, headers, url, 0, b"a" * 10).headers["Upload-Offset"] == "10"

    stale = tus_patch(client, headers, url, 0, b"b" * 10)
    assert stale.status_code == 409

    wrong = client.patch(
        url,
        content=b"c" * 10,
        headers={
            **headers,
            **TUS,
            "Upload-Offset": "10",
            "Content-Type": OFFSET_STREAM,
            "Upload-Checksum": sha256_header(b"something else"),
        },
    )
    assert wrong.status_code == 460
    assert wrong.headers["Tus-Resumable"] == "1.0.0"
    head = client.head(url, headers={**headers, **TUS})
    assert head.headers["Upload-Offset"] == "10"
    assert head.headers["Upload-Length"] == "30"
    assert head.headers["Cache-Control"] == "no-store"
    upload_id = url.rsplit("/", 1)[1]
    assert _store(settings).data_path(upload_id).stat().st_size == 10

    assert tus_patch(client, headers, url, 10, b"d" * 10).headers["Upload-Offset"] == "20"
    bad_algorithm = client.patch(
        url,
        content=b"e",
        headers={
            **headers,
            **TUS,
            "Upload-Offset": "20",
            "Content-Type": OFFSET_STREAM,
            "Upload-Checksum": "md5 " + base64.b64encode(b"0123456789abcdef").decode(),
        },
    )
    assert bad_algorithm.status_code == 400
    no_version = client.patch(
        url, content=b"e", headers={**headers, "Upload-Offset": "20", "Content-Type": OFFSET_STREAM}
    )
    assert no_version.status_code == 412
    wrong_type = client.patch(url, content=b"e", headers={**headers, **TUS, "Upload-Offset": "20"})
    assert wrong_type.status_code == 415
    too_long = tus_patch(client, headers, url, 20, b"f" * 11)
    assert too_long.status_code == 413
    assert client.head(url, headers={**headers, **TUS}).headers["Upload-Offset"] == "20"


def test_only_the_uploader_may_continue(client: TestClient, as_: Actors, pathology_case: str) -> None:
    url = tus_create(client, as_["ref_d1"], 30, pathology_case, "x.svs").headers["Location"]
    for other in ("ref_d1b", "path_c1", "ref_d2"):
        assert client.head(url, headers={**as_[other], **TUS}).status_code == 404
        assert tus_patch(client, as_[other], url, 0, b"x").status_code == 404
    assert client.head(url, headers=TUS).status_code == 401
    assert client.head("/uploads/..%2F..%2Fsecret", headers={**as_["ref_d1"], **TUS}).status_code == 404


def test_termination_removes_the_bytes(
    client: TestClient, as_: Actors, pathology_case: str, settings: Settings
) -> None:
    headers = as_["ref_d1"]
    url = tus_create(client, headers, 30, pathology_case, "x.svs").headers["Location"]
    tus_patch(client, headers, url, 0, b"a" * 10)
    assert client.delete(url, headers={**headers, **TUS}).status_code == 204
    assert client.head(url, headers={**headers, **TUS}).status_code == 404
    assert list((settings.data_dir / "uploads").iterdir()) == []


def test_creation_with_upload_completes_a_slide(
    client: TestClient, as_: Actors, pathology_case: str, svs_path: Path
) -> None:
    data = svs_path.read_bytes()
    response = client.post(
        "/uploads",
        content=data,
        headers={
            **as_["ref_d1"],
            **TUS,
            "Upload-Length": str(len(data)),
            "Content-Type": OFFSET_STREAM,
            "Upload-Metadata": metadata(filename="cmu.svs", case_id=pathology_case),
            "Upload-Checksum": sha256_header(data),
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    slide = client.get("/api" + response.headers["Slide-Location"][4:], headers=as_["path_c1"]).json()
    assert slide["blob_sha256"] == hashlib.sha256(data).hexdigest()


def test_expired_uploads_are_gone_and_swept(
    client: TestClient, as_: Actors, pathology_case: str, settings: Settings
) -> None:
    headers = as_["ref_d1"]
    url = tus_create(client, headers, 30, pathology_case, "x.svs").headers["Location"]
    upload_id = url.rsplit("/", 1)[1]
    store = _store(settings)
    info = store.load(upload_id)
    store.save(info.__class__(**{**info.__dict__, "expires_at": utcnow() - timedelta(seconds=1)}))
    assert client.head(url, headers={**headers, **TUS}).status_code == 410
    assert store.sweep(utcnow()) == [upload_id]
    assert list(store.root.iterdir()) == []
