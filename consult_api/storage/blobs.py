"""Content-addressed blob storage: a blob's name is the sha256 of its bytes.

Writes go to a temporary file in the store, are fsynced, then atomically renamed into place, so a
crash leaves either the whole blob or nothing. Reads verify the digest as they stream, so silent
corruption on disk is reported instead of served.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from consult_api.errors import HoichanError, StorageError

CHUNK = 1024 * 1024
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
if _LIBC is not None:
    _LIBC.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _LIBC.syncfs.argtypes = [ctypes.c_int]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(HoichanError):
    status_code = 404
    title = "Not found"


class BlobCorrupted(HoichanError):
    """The bytes on disk no longer hash to their name."""

    status_code = 500
    title = "Stored data corrupted"


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


@dataclass(frozen=True)
class StagedBlob:
    """Bytes written and fsynced in the store's temp area, not yet published under their digest."""

    path: Path
    ref: BlobRef

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class BlobWriter:
    """Receives bytes into a temp file in the store's temp area, hashing them on the way."""

    def __init__(self, tmp_dir: Path, *, suffix: str = "", keep_head: int = 0) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-", suffix=suffix)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.size = 0
        self._keep_head = keep_head
        self.head = b""
        """The first ``keep_head`` bytes, kept in memory: a header parsed without reading the file."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise _storage_error(exc) from exc
        self._digest.update(data)
        if self.size < self._keep_head:
            self.head += bytes(memoryview(data)[: self._keep_head - self.size])
        self.size += len(data)

    def finish(self, *, durable: bool = True) -> StagedBlob:
        """Close the temp file; ``durable=False`` leaves the sync to the caller (one for a batch).

        Not durable yet, but on its way: the kernel starts writing it out now, so the batch's sync
        finds little left to do (50 STOW-RS instances: 3 ms instead of 17 here).
        """
        try:
            self._file.flush()
            if durable:
                os.fsync(self._file.fileno())
            else:
                start_writeback(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.abort()
            raise _storage_error(exc) from exc
        return StagedBlob(self.path, BlobRef(self._digest.hexdigest(), self.size))

    def finish_durable_as(self, path: Path) -> StagedBlob:
        """Close under ``path`` (same folder), file and name both durable before this returns.

        Renamed before the fsync: on ext4 the file's fsync then commits the rename in the same
        journal transaction, and the folder's fsync that POSIX asks for finds nothing left to do.
        A crash before the rename leaves only the temporary name, which readers ignore.
        """
        try:
            self._file.flush()
            os.replace(self.path, path)
            self.path = path
            os.fsync(self._file.fileno())
            self._file.close()
            _fsync_dir(path.parent)
        except OSError as exc:
            self.abort()
            raise _storage_error(exc) from exc
        return StagedBlob(path, BlobRef(self._digest.hexdigest(), self.size))

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


class BlobStore(Protocol):
    """What every backend offers (local disk now; an S3-compatible store fits the same calls)."""

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef: ...

    def put_file(self, path: Path) -> BlobRef: ...

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob: ...

    def commit(self, staged: StagedBlob, *, sync_dir: bool = True) -> BlobRef: ...

    def open_writer(self, *, keep_head: int = 0) -> BlobWriter: ...

    def prepare(self, ref: BlobRef) -> None: ...

    def sync_all(self, written: Iterable[BlobRef] = ()) -> None: ...

    def exists(self, sha256: str) -> bool: ...

    def open_verified(self, sha256: str) -> Iterator[bytes]: ...

    def local_path(self, sha256: str) -> Path: ...

    def spool_dir(self, name: str) -> Path: ...


def check_digest(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise BlobNotFound(f"blob {sha256!r} is not a sha256 digest")
    return sha256


def read_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


class LocalBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``; temp files under ``root/tmp`` on the same filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def local_path(self, sha256: str) -> Path:
        digest = check_digest(sha256)
        return self.root / digest[:2] / digest[2:4] / digest

    def exists(self, sha256: str) -> bool:
        return self.local_path(sha256).is_file()

    def spool_dir(self, name: str) -> Path:
        """A folder for files accepted but not yet committed, kept across restarts.

        On the blobs' filesystem, so committing a spooled file is a link or a rename, never a copy.
        """
        path = self.root / "spool" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def put_bytes(self, data: bytes) -> BlobRef:
        return self.put_stream([data])

    def put_file(self, path: Path) -> BlobRef:
        with path.open("rb") as stream:
            return self.put_stream(read_chunks(stream))

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        """Store the bytes; storing the same bytes twice is a no-op returning the same ref."""
        staged = self.stage(chunks)
        try:
            return self.commit(staged)
        finally:
            staged.discard()

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        """Write bytes to a fsynced temp file inside the store, hashing as they pass.

        Callers parse or validate the staged file, then ``commit`` it (a rename, no copy) or
        ``discard`` it; nothing is visible in the store until the commit.
        """
        writer = self.open_writer()
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.finish()
        except OSError as exc:
            writer.abort()
            raise _storage_error(exc) from exc
        except BaseException:
            writer.abort()
            raise

    def open_writer(self, *, keep_head: int = 0) -> BlobWriter:
        """A push-style stager for producers that are not iterables (multipart parsers, sockets).

        The first ``keep_head`` bytes stay in memory as the writer's ``head``, for a header parse.
        """
        return BlobWriter(self.tmp_dir, keep_head=keep_head)

    def prepare(self, ref: BlobRef) -> None:
        """Make the blob's folder ahead of its commit, where the caller has time to spare.

        Why: nearly every new blob lands in a new ``ab/cd`` folder, and two ``mkdir`` per blob in a
        STOW-RS request's commit were ~5 ms of the 50 instances' wait. A folder left empty by a
        request that then fails is harmless: it is where that digest would go anyway.
        """
        self.local_path(ref.sha256).parent.mkdir(parents=True, exist_ok=True)

    def commit(self, staged: StagedBlob, *, sync_dir: bool = True) -> BlobRef:
        """Rename into place; with ``sync_dir=False`` the caller must ``sync_all`` before relying on it."""
        try:
            self._publish(staged.path, staged.ref, sync_dir)
        except OSError as exc:
            raise _storage_error(exc) from exc
        return staged.ref

    def _publish(self, tmp: Path, ref: BlobRef, sync_dir: bool) -> None:
        final = self.local_path(ref.sha256)
        if final.is_file() and final.stat().st_size == ref.size:
            return
        if not final.parent.is_dir():
            final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        if sync_dir:
            _fsync_dir(final.parent)

    def sync_all(self, written: Iterable[BlobRef] = ()) -> None:
        """Everything written to the store so far, durable: one ``syncfs`` of its filesystem.

        Cheaper than a file and a folder fsync per blob when a batch of hundreds was written, and
        what a writer uses that can redo the batch from its own durable copy if this never returns.

        Then the ``written`` blobs, clean after the sync, leave the page cache (``drop_cached``):
        ingest copies (STOW-RS parts, the DIMSE indexer's) are read, if at all, much later. Given
        back, their pages serve the next batch instead of new ones: on a VM whose balloon reports
        free pages to the host (this one), a page the guest has not used lately costs a host fault
        (``python -m benchmarks.ingest.page_reuse``: 2.2x the files/s of keeping them cached, at a
        third of the system CPU). Writing past the page cache (``O_DIRECT``) took no new pages
        either, but each write waited for the disk: STOW-RS of 1,000 CT ran at a median 377
        instances/s that way against 397 given back (eleven alternating pairs, eight won by
        give-back), for 0.12 ms more system CPU per instance (median 0.76 against 0.64).
        """
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _LIBC is None or _LIBC.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
        for ref in written:
            drop_cached(self.local_path(ref.sha256))

    def open_verified(self, sha256: str) -> Iterator[bytes]:
        """Stream the blob, raising ``BlobCorrupted`` at the end if the bytes do not match."""
        path = self.local_path(sha256)
        if not path.is_file():
            raise BlobNotFound(f"blob {sha256} not found")
        return self._verified_chunks(path, sha256)

    def read_bytes(self, sha256: str) -> bytes:
        return b"".join(self.open_verified(sha256))

    @staticmethod
    def _verified_chunks(path: Path, sha256: str) -> Iterator[bytes]:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in read_chunks(stream):
                digest.update(chunk)
                yield chunk
        if digest.hexdigest() != sha256:
            raise BlobCorrupted(f"blob {sha256} failed verification on read")


SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages now (``sync_file_range``), not wait.

    Not a durability guarantee (no metadata, no device flush): the later ``fsync``/``syncfs`` still
    is; it just finds the data already on its way. A no-op where the call does not exist.
    """
    if _LIBC is not None:
        _LIBC.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def drop_cached(path: Path) -> None:
    """Give a file's clean pages back to the kernel (``POSIX_FADV_DONTNEED``); dirty ones stay.

    Advice, not a requirement: a file already gone (a refused instance) or a filesystem that
    ignores the advice changes nothing but memory use.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError) -> HoichanError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError("no space left in blob storage; nothing was stored")
    return StorageError(f"blob storage write failed: {exc.strerror}")
