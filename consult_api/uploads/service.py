"""Rules for uploads: who may start one and for which case, who may continue it, and what happens
when the last byte arrives (the file goes to slide ingest, then the upload is removed)."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.db import new_id, utcnow
from consult_api.errors import HoichanError, InvalidInput, PayloadTooLarge, ResourceNotFound
from consult_api.slides import service as slides
from consult_api.slides.models import Slide
from consult_api.slides.service import SlideFiles
from consult_api.storage.blobs import BlobStore
from consult_api.uploads.errors import UploadGone
from consult_api.uploads.storage import UploadInfo, UploadStore

MAX_UPLOAD_BYTES = 64 * 1024**3
UPLOAD_TTL = timedelta(hours=24)
"""An upload with no PATCH for this long expires; each PATCH extends it."""
CHECKSUM_ALGORITHMS = ("sha256", "sha1")
"""sha256 is ours; sha1 because the reference Python client (tuspy) sends it."""


class BadRequest(HoichanError):
    """Malformed tus headers (400, as the protocol says)."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def matches(self, digest: bytes) -> bool:
        return hmac.compare_digest(self.digest, digest)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    result: dict[str, str] = {}
    for pair in (header or "").split(","):
        if not pair.strip():
            continue
        key, _, value = pair.strip().partition(" ")
        try:
            result[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata value for {key!r} is not base64 UTF-8") from None
    return result


def encode_metadata(info: UploadInfo) -> str:
    pairs = {"filename": info.filename, "case_id": info.case_id}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def parse_checksum(header: str | None) -> Checksum | None:
    if not header:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm.lower() not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"checksum algorithm {algorithm!r} is not supported; use {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        return Checksum(algorithm.lower(), base64.b64decode(value.strip(), validate=True))
    except binascii.Error:
        raise BadRequest("Upload-Checksum value is not base64") from None


def create(
    session: Session, principal: Principal, store: UploadStore, length: int, metadata: dict[str, str]
) -> UploadInfo:
    """Check the target case and the caller's right to add slides to it, then create the upload."""
    if length > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    filename, case_id = metadata.get("filename", "").strip(), metadata.get("case_id", "").strip()
    if not filename or not case_id:
        raise InvalidInput("Upload-Metadata must carry filename and case_id")
    case = slides.upload_target(session, principal, case_id)
    now = utcnow()
    info = UploadInfo(
        id=new_id().replace("-", ""),
        length=length,
        offset=0,
        filename=filename[:255],
        case_id=case.id,
        created_by=principal.actor,
        created_at=now,
        expires_at=now + UPLOAD_TTL,
    )
    store.create(info)
    audit.record(
        session, principal, "upload.create", "upload", info.id, case_id=case.id, detail={"length": length}
    )
    return info


def owned(store: UploadStore, principal: Principal, upload_id: str, now: datetime) -> UploadInfo:
    """The upload if the caller started it (or is an administrator): 404 otherwise, 410 if expired."""
    info = store.load(upload_id)
    if info.created_by != principal.actor and not principal.is_admin:
        raise ResourceNotFound("upload", upload_id)
    if info.expires_at <= now:
        raise UploadGone(f"upload {upload_id} expired at {info.expires_at.isoformat()}")
    return info


def complete(
    session: Session,
    principal: Principal,
    store: UploadStore,
    blobs: BlobStore,
    files: SlideFiles,
    info: UploadInfo,
) -> Slide:
    """Hand the finished file to slide ingest; the upload is removed whether it is accepted or not."""
    try:
        return slides.ingest(
            session,
            principal,
            blobs,
            files,
            case_id=info.case_id,
            path=store.data_path(info.id),
            filename=info.filename,
        )
    finally:
        store.remove(info.id)
