"""Content-addressed storage: write once, verify on read, leave nothing half-written."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consult_api.errors import StorageError
from consult_api.storage import blobs
from consult_api.storage.blobs import (
    DIRECT_BUFFER_BYTES,
    BlobCorrupted,
    BlobNotFound,
    BlobRef,
    BlobWriter,
    DirectBlobWriter,
    LocalBlobStore,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_name_is_the_sha256_and_bytes_round_trip(store: LocalBlobStore) -> None:
    data = b"DICM" * 100_000
    ref = store.put_bytes(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == len(data)
    assert store.read_bytes(ref.sha256) == data
    assert store.local_path(ref.sha256).parent.parent.name == ref.sha256[:2]


def test_same_bytes_twice_is_one_blob(store: LocalBlobStore) -> None:
    first = store.put_bytes(b"same")
    second = store.put_stream([b"sa", b"me"])
    assert first == second
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 1


def test_corruption_on_disk_is_detected_on_read(store: LocalBlobStore) -> None:
    ref = store.put_bytes(b"original bytes")
    path = store.local_path(ref.sha256)
    path.chmod(0o644)
    path.write_bytes(b"original bytez")
    with pytest.raises(BlobCorrupted):
        store.read_bytes(ref.sha256)


def test_unknown_and_malformed_digests(store: LocalBlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.read_bytes("0" * 64)
    with pytest.raises(BlobNotFound):
        store.local_path("../../etc/passwd")


def test_failed_stream_leaves_nothing_behind(store: LocalBlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError) as info:
        store.put_stream(broken())
    assert info.value.status_code == 507
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache, by ``mincore`` on a private read mapping of it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_COPY) as view:
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) != 0:
            pytest.skip(f"mincore: errno {ctypes.get_errno()}")
        return sum(v & 1 for v in vector)


@pytest.mark.skipif(sys.platform != "linux", reason="page cache advice is Linux's")
def test_a_synced_batch_leaves_the_page_cache_and_still_reads_back(store: LocalBlobStore) -> None:
    """``sync_all(written=...)`` drops what it made durable; blobs not named stay cached."""
    dropped, kept = os.urandom(300_000), os.urandom(300_000)
    staged = [store.stage([data]) for data in (dropped, kept)]
    for blob in staged:
        store.commit(blob, sync_dir=False)
    dropped_path, kept_path = (store.local_path(blob.ref.sha256) for blob in staged)
    if _resident_pages(dropped_path) == 0:
        pytest.skip("this filesystem does not keep written pages cached (tmpfs keeps them as the file)")
    missing = BlobRef("0" * 64, 1)  # a refused instance: no blob under its name
    store.sync_all(written=[staged[0].ref, missing])
    assert _resident_pages(dropped_path) == 0
    assert _resident_pages(kept_path) > 0
    assert store.read_bytes(staged[0].ref.sha256) == dropped


SIZES = [
    0,
    1,
    4095,
    4096,
    4097,
    DIRECT_BUFFER_BYTES - 1,
    DIRECT_BUFFER_BYTES,
    DIRECT_BUFFER_BYTES + 1,
    3_145_851,
]


def _write_in_pieces(writer: BlobWriter, data: bytes, seed: int) -> None:
    """Uneven pieces, as a multipart parser hands them over (some cross the buffer's end)."""
    pieces = random.Random(seed)
    at = 0
    while at < len(data):
        step = pieces.choice([1, 7, 4096, 65_536, 300_001])
        writer.write(memoryview(data)[at : at + step])
        at += step


@pytest.mark.parametrize("size", SIZES)
def test_a_direct_writer_stores_exactly_the_bytes_it_was_given(store: LocalBlobStore, size: int) -> None:
    data = os.urandom(size)
    writer = store.open_writer(direct=True, keep_head=65_536)
    _write_in_pieces(writer, data, size)
    staged = writer.finish(durable=False)
    assert staged.ref == BlobRef(hashlib.sha256(data).hexdigest(), size)
    assert staged.path.read_bytes() == data  # padding cut off, every block where it belongs
    assert writer.head == data[:65_536]
    store.commit(staged)
    assert store.read_bytes(staged.ref.sha256) == data


def test_direct_writes_leave_nothing_in_the_page_cache(store: LocalBlobStore) -> None:
    writer = store.open_writer(direct=True)
    if not isinstance(writer, DirectBlobWriter) or not writer.direct:
        writer.abort()
        pytest.skip("this filesystem refuses O_DIRECT")
    writer.write(os.urandom(700_000))
    staged = writer.finish(durable=True)
    assert _resident_pages(staged.path) == 0


def test_direct_writers_reuse_their_buffers(store: LocalBlobStore) -> None:
    """Buffers go back to the store's pool on finish and on abort, and come out again."""
    first = store.open_writer(direct=True)
    second = store.open_writer(direct=True)
    assert isinstance(first, DirectBlobWriter) and isinstance(second, DirectBlobWriter)
    buffers = {id(first._buffer), id(second._buffer)}
    assert len(buffers) == 2  # two writers at once never share one
    first.write(b"x" * 10)
    first.finish()
    second.abort()
    assert not second.path.exists()
    third, fourth = store.open_writer(direct=True), store.open_writer(direct=True)
    assert isinstance(third, DirectBlobWriter) and isinstance(fourth, DirectBlobWriter)
    assert {id(third._buffer), id(fourth._buffer)} == buffers
    third.abort()
    fourth.abort()


def test_a_filesystem_without_o_direct_gets_the_same_bytes(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "_set_direct", lambda fd, on: False)
    data = os.urandom(DIRECT_BUFFER_BYTES + 5_000)
    writer = store.open_writer(direct=True)
    _write_in_pieces(writer, data, 1)
    staged = writer.finish()
    assert staged.path.read_bytes() == data


def test_a_full_disk_during_a_direct_write_leaves_nothing(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = store.open_writer(direct=True)
    monkeypatch.setattr(blobs.os, "write", full)
    with pytest.raises(StorageError) as info:
        writer.write(b"y" * (DIRECT_BUFFER_BYTES + 1))
    assert info.value.status_code == 507
    monkeypatch.undo()
    assert list(store.tmp_dir.iterdir()) == []
    again = store.open_writer(direct=True)  # the buffer went back to the pool
    again.abort()
