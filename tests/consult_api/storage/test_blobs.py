"""Content-addressed storage: write once, verify on read, leave nothing half-written."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consult_api.errors import StorageError
from consult_api.storage.blobs import (
    BlobCorrupted,
    BlobNotFound,
    BlobRef,
    BlobWriter,
    LocalBlobStore,
)
from tests.conftest import resident_pages


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


@pytest.mark.skipif(sys.platform != "linux", reason="page cache advice is Linux's")
def test_a_synced_batch_leaves_the_page_cache_and_still_reads_back(store: LocalBlobStore) -> None:
    """``sync_all(written=...)`` drops what it made durable; blobs not named stay cached."""
    dropped, kept = os.urandom(300_000), os.urandom(300_000)
    staged = [store.stage([data]) for data in (dropped, kept)]
    for blob in staged:
        store.commit(blob, sync_dir=False)
    dropped_path, kept_path = (store.local_path(blob.ref.sha256) for blob in staged)
    if resident_pages(dropped_path) == 0:
        pytest.skip("this filesystem does not keep written pages cached (tmpfs keeps them as the file)")
    missing = BlobRef("0" * 64, 1)  # a refused instance: no blob under its name
    store.sync_all(written=[staged[0].ref, missing])
    assert resident_pages(dropped_path) == 0
    assert resident_pages(kept_path) > 0
    assert store.read_bytes(staged[0].ref.sha256) == dropped


SIZES = [0, 1, 4095, 65_535, 65_536, 65_537, 3_145_851]


def _write_in_pieces(writer: BlobWriter, data: bytes, seed: int) -> None:
    """Uneven pieces, as a multipart parser hands them over (some cross the head's end)."""
    pieces = random.Random(seed)
    at = 0
    while at < len(data):
        step = pieces.choice([1, 7, 4096, 65_536, 300_001])
        writer.write(memoryview(data)[at : at + step])
        at += step


@pytest.mark.parametrize("size", SIZES)
def test_a_writer_keeps_the_head_it_was_asked_for(store: LocalBlobStore, size: int) -> None:
    """``keep_head``: a header parsed from memory, without reading the file back."""
    data = os.urandom(size)
    writer = store.open_writer(keep_head=65_536)
    _write_in_pieces(writer, data, size)
    staged = writer.finish(durable=False)
    assert staged.ref == BlobRef(hashlib.sha256(data).hexdigest(), size)
    assert staged.path.read_bytes() == data
    assert writer.head == data[:65_536]
    store.commit(staged)
    assert store.read_bytes(staged.ref.sha256) == data
    unasked = store.open_writer()
    unasked.write(b"DICM")
    assert unasked.head == b""  # not asked for: nothing kept
    unasked.abort()
