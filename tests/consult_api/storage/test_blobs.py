"""Content-addressed storage: write once, verify on read, leave nothing half-written."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from consult_api.errors import StorageError
from consult_api.storage.blobs import BlobCorrupted, BlobNotFound, LocalBlobStore


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
