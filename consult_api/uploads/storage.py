"""Upload storage on local disk: ``<id>.bin`` (the bytes) and ``<id>.json`` (the sidecar).

The sidecar's ``offset`` is the committed offset: the number of bytes known to be on disk and
acknowledged to the client. Every PATCH, under an exclusive ``flock`` on the data file:

1. seeks to and truncates at the committed offset, discarding whatever a crashed or cancelled
   request left after it (a ``kill -9`` mid-PATCH leaves such bytes);
2. writes the body while hashing it;
3. on a checksum mismatch truncates back (the chunk is rolled back);
4. otherwise fsyncs the data, then replaces the sidecar atomically (temp file, fsync, rename,
   fsync of the folder).

So after any crash the sidecar names an offset whose bytes are durable, and an upload resumes
from exactly there, in this process or the next.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from consult_api.errors import ResourceNotFound
from consult_api.uploads.errors import UploadLocked

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class UploadInfo:
    id: str
    length: int
    offset: int
    filename: str
    case_id: str
    created_by: str
    created_at: datetime
    expires_at: datetime

    @property
    def complete(self) -> bool:
        return self.offset == self.length

    def to_json(self) -> str:
        fields: dict[str, Any] = asdict(self)
        fields["created_at"] = self.created_at.isoformat()
        fields["expires_at"] = self.expires_at.isoformat()
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> UploadInfo:
        fields = json.loads(text)
        fields["created_at"] = datetime.fromisoformat(fields["created_at"])
        fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
        return cls(**fields)


def _checked(upload_id: str) -> str:
    """Ids are 32 hex digits; anything else (a path, say) is simply not an upload."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise ResourceNotFound("upload", upload_id)
    return upload_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkWriter:
    """Appends one request's body at the committed offset; commit or roll back, then close."""

    def __init__(self, store: UploadStore, info: UploadInfo, file: IO[bytes], algorithm: str | None) -> None:
        self.store = store
        self.info = info
        self._file = file
        self._hash = hashlib.new(algorithm) if algorithm else None
        self.received = 0

    def begin(self) -> None:
        self._file.seek(self.info.offset)
        self._file.truncate(self.info.offset)

    def write(self, data: bytes) -> None:
        self._file.write(data)
        if self._hash is not None:
            self._hash.update(data)
        self.received += len(data)

    def digest(self) -> bytes:
        return self._hash.digest() if self._hash is not None else b""

    def rollback(self) -> None:
        self._file.flush()
        self._file.truncate(self.info.offset)
        os.fsync(self._file.fileno())
        self.received = 0

    def commit(self, expires_at: datetime) -> UploadInfo:
        self._file.flush()
        os.fsync(self._file.fileno())
        self.info = replace(self.info, offset=self.info.offset + self.received, expires_at=expires_at)
        self.store.save(self.info)
        return self.info

    def close(self) -> None:
        self._file.close()


class UploadStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def data_path(self, upload_id: str) -> Path:
        return self.root / f"{_checked(upload_id)}.bin"

    def _sidecar(self, upload_id: str) -> Path:
        return self.root / f"{_checked(upload_id)}.json"

    def save(self, info: UploadInfo) -> None:
        """Replace the sidecar atomically: readers see the old or the new one, never a mix."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".sidecar-")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(info.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._sidecar(info.id))
        finally:
            Path(tmp).unlink(missing_ok=True)
        _fsync_dir(self.root)

    def create(self, info: UploadInfo) -> None:
        self.data_path(info.id).touch(exist_ok=False)
        self.save(info)

    def load(self, upload_id: str) -> UploadInfo:
        try:
            return UploadInfo.from_json(self._sidecar(upload_id).read_text())
        except FileNotFoundError:
            raise ResourceNotFound("upload", upload_id) from None

    def writer(self, upload_id: str, algorithm: str | None = None) -> ChunkWriter:
        """An exclusive writer (``UploadLocked`` if another request holds the upload)."""
        try:
            file = self.data_path(upload_id).open("r+b")
        except FileNotFoundError:
            raise ResourceNotFound("upload", upload_id) from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = self.load(upload_id)
        except BlockingIOError:
            file.close()
            raise UploadLocked(f"upload {upload_id} is being written by another request; retry") from None
        except BaseException:
            file.close()
            raise
        return ChunkWriter(self, info, file, algorithm)

    def remove(self, upload_id: str) -> None:
        self._sidecar(upload_id).unlink(missing_ok=True)
        self.data_path(upload_id).unlink(missing_ok=True)

    def sweep(self, now: datetime) -> list[str]:
        """Remove uploads past their expiry that no request is writing; returns their ids."""
        self._remove_orphans(now)
        removed = []
        for sidecar in self.root.glob("*.json"):
            upload_id = sidecar.stem
            try:
                info = self.load(upload_id)
                if info.expires_at > now:
                    continue
                writer = self.writer(upload_id)
            except (ResourceNotFound, UploadLocked, ValueError, KeyError):
                continue
            try:
                self.remove(upload_id)
                removed.append(upload_id)
            finally:
                writer.close()
        return removed

    def _remove_orphans(self, now: datetime, grace: timedelta = timedelta(hours=1)) -> None:
        """Data files whose creation crashed before the first sidecar was written."""
        cutoff = time.time() - grace.total_seconds()
        for data in self.root.glob("*.bin"):
            if not self._sidecar(data.stem).exists() and data.stat().st_mtime < cutoff:
                data.unlink(missing_ok=True)
