"""Browser uploads to a case: loose Part-10 files and zip archives through the shared ingest path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.dicom import archive, ingest
from consult_api.dicom.ingest import IngestContext, StoreOutcome
from consult_api.storage.blobs import BlobStore, StagedBlob, read_chunks

ZIP_MAGIC = b"PK\x03\x04"


def _is_zip(name: str, stream: BinaryIO) -> bool:
    head = stream.read(4)
    stream.seek(0)
    return head == ZIP_MAGIC or name.lower().endswith(".zip")


def _stage_all(
    store: BlobStore, items: Sequence[tuple[str, BinaryIO]], limits: archive.ZipLimits
) -> list[tuple[str, StagedBlob]]:
    """Stage everything first, so an unsafe archive refuses the whole upload before anything is stored."""
    staged: list[tuple[str, StagedBlob]] = []
    try:
        for name, stream in items:
            if _is_zip(name, stream):
                staged.extend(
                    (f"{name}/{member}", blob)
                    for member, blob in archive.stage_members(stream, store, limits)
                )
            else:
                staged.append((name, store.stage(read_chunks(stream))))
    except BaseException:
        for _, blob in staged:
            blob.discard()
        raise
    return staged


def upload_to_case(
    session: Session,
    principal: Principal,
    store: BlobStore,
    case_id: str,
    items: Sequence[tuple[str, BinaryIO]],
    limits: archive.ZipLimits,
) -> list[tuple[str, StoreOutcome]]:
    case = ingest.case_for_upload(session, principal, case_id)
    staged = _stage_all(store, items, limits)
    ctx = IngestContext(principal=principal, via="upload", case=case)
    outcomes = ingest.store_many(session, store, ctx, [blob for _, blob in staged])
    results = [(name, outcome) for (name, _), outcome in zip(staged, outcomes, strict=True)]
    ingest.finish(session, ctx, audit.record)
    return results
