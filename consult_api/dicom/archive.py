"""Zip uploads from browsers: checked whole before any member is stored.

Refused before extraction: names that escape the archive (absolute, ``..``, drive letters),
nested archives, too many entries, a declared total or per-entry ratio beyond the limits
(decompression bombs). While extracting, the real byte counts are enforced too, since a zip's
declared sizes can lie.
"""

from __future__ import annotations

import zipfile
from pathlib import PurePosixPath
from typing import BinaryIO

from consult_api.errors import HoichanError
from consult_api.storage import zipsafe
from consult_api.storage.blobs import BlobStore, StagedBlob
from consult_api.storage.zipsafe import ZipLimits

SKIPPED_NAMES = {"DICOMDIR"}
SKIPPED_PREFIXES = ("__MACOSX/",)

__all__ = ["UnsafeArchive", "ZipLimits", "check_archive", "stage_members"]


class UnsafeArchive(HoichanError):
    status_code = 400
    title = "Unsafe archive"


def _wanted(path: PurePosixPath) -> bool:
    return not str(path).startswith(SKIPPED_PREFIXES) and path.name not in SKIPPED_NAMES


def check_archive(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The members to ingest, or ``UnsafeArchive`` naming the first problem."""
    try:
        members = [info for info, path in zipsafe.checked_entries(archive, limits) if _wanted(path)]
    except zipsafe.UnsafeZip as exc:
        raise UnsafeArchive(f"archive {exc}") from exc
    if not members:
        raise UnsafeArchive("the archive contains no files")
    return members


def stage_members(stream: BinaryIO, store: BlobStore, limits: ZipLimits) -> list[tuple[str, StagedBlob]]:
    """Check then stage every member; on any failure nothing staged is left behind."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchive(f"not a readable zip archive: {exc}") from exc
    staged: list[tuple[str, StagedBlob]] = []
    with archive:
        members = check_archive(archive, limits)
        try:
            for info in members:
                staged.append((info.filename, store.stage(zipsafe.entry_chunks(archive, info))))
        except zipsafe.UnsafeZip as exc:
            _discard(staged)
            raise UnsafeArchive(f"archive {exc}") from exc
        except BaseException:
            _discard(staged)
            raise
    return staged


def _discard(staged: list[tuple[str, StagedBlob]]) -> None:
    for _, blob in staged:
        blob.discard()
