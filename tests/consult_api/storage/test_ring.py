"""The durable ring: records survive a reopen until released, across wrap-around, torn tails dropped."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest

from consult_api.storage.ring import (
    ALIGN,
    CRC,
    HEADER_V1,
    HEADER_V1_SIZE,
    HEADER_V2,
    HEADER_V2_SIZE,
    MAGIC_V1,
    MAGIC_V2,
    DurableRing,
    RingFull,
    RingUnavailable,
    checksum,
)


def record(n: int, size: int = 20_000) -> bytes:
    return bytes([n % 251]) * size


def append(ring: DurableRing, data: bytes, tag: str = "MODALITY") -> int:
    return ring.append(data, tag).seq


def test_unreleased_records_come_back_after_a_reopen(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    assert ring.open() == []
    seqs = [append(ring, record(n)) for n in range(3)]
    ring.release([seqs[0]])
    ring.close()

    again = DurableRing(tmp_path / "ring", 1 << 20)
    found = again.open()
    assert [e.seq for e in found] == seqs[1:]
    assert [again.read(e) for e in found] == [record(1), record(2)]
    assert {e.tag for e in found} == {"MODALITY"}
    assert append(again, record(9)) == seqs[-1] + 1  # sequence numbers go on
    again.close()


def test_records_wrap_around_and_are_followed_across_the_wrap(tmp_path: Path) -> None:
    size = 16 * ALIGN * 8  # 512 KiB: room for ~6 records of 80 KB
    ring = DurableRing(tmp_path / "ring", size)
    ring.open()
    seqs: list[int] = []
    while len(seqs) < 20:
        try:
            seqs.append(append(ring, record(len(seqs), 80_000)))
        except RingFull:
            break
    assert 4 <= len(seqs) <= 7
    ring.release(seqs[:-1])  # all but the newest: the next ones wrap to offset 0
    wrapped = [append(ring, record(100 + n, 80_000)) for n in range(3)]
    ring.close()

    again = DurableRing(tmp_path / "ring", size)
    found = again.open()
    assert [e.seq for e in found] == [seqs[-1], *wrapped]
    assert found[1].offset == 0
    assert again.read(found[-1]) == record(102, 80_000)
    again.close()


def test_a_torn_last_record_is_not_replayed(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    append(ring, record(1))
    torn = ring.append(record(2), "X")
    ring.close()
    fd = os.open(tmp_path / "ring", os.O_WRONLY)
    os.pwrite(fd, b"\xff" * 100, torn.data_offset + 5000)  # as if the write never finished
    os.close(fd)
    again = DurableRing(tmp_path / "ring", 1 << 20)
    assert [e.seq for e in again.open()] == [1]
    again.close()


def test_a_record_larger_than_a_quarter_of_the_ring_is_refused(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    with pytest.raises(RingFull):
        append(ring, record(1, (1 << 18) + 1))
    ring.close()


def test_a_ring_held_by_another_process_is_refused(tmp_path: Path) -> None:
    first = DurableRing(tmp_path / "ring", 1 << 20)
    first.open()
    try:
        with pytest.raises(RingUnavailable):
            DurableRing(tmp_path / "ring", 1 << 20).open()
    finally:
        first.close()


def test_space_is_reclaimed_only_up_to_the_oldest_record_still_owed(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    first, second, third = (append(ring, record(n)) for n in range(3))
    ring.release([second, third])  # indexed before the first was even queued
    ring.release([third])  # released twice: no effect
    assert ring.live == 3
    # A crash now replays from the first: the checkpoint did not pass it.
    assert checkpoint(tmp_path) == (first, 0)
    ring.release([first])
    assert ring.live == 0  # the first was the only one owed: all three are free at once
    ring.close()
    again = DurableRing(tmp_path / "ring", 1 << 20)
    assert again.open() == []
    again.close()


def checkpoint(folder: Path) -> tuple[int, int]:
    seq, offset = (folder / "ring.checkpoint").read_text().split()
    return int(seq), int(offset)


def test_a_record_streamed_into_its_slot_comes_back_whole(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    data = bytes(range(256)) * 300  # 76,800 bytes, written in three parts as they would arrive
    slot = ring.reserve(100_000)
    for start in range(0, len(data), 30_000):
        slot.write(start, data[start : start + 30_000])
    entry = slot.commit(len(data), checksum(data), "MODALITY")
    after = append(ring, record(7))  # placed after the whole slot, not after the shorter data
    ring.close()

    again = DurableRing(tmp_path / "ring", 1 << 20)
    found = again.open()
    assert [e.seq for e in found] == [entry.seq, after]
    assert again.read(found[0]) == data
    assert found[1].offset == entry.offset + entry.span
    again.close()


def test_a_slot_cannot_take_more_than_it_reserved(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    slot = ring.reserve(1000)
    with pytest.raises(ValueError, match="capacity"):
        slot.write(0, bytes(slot.capacity + 1))
    with pytest.raises(ValueError, match="longer than its slot"):
        slot.commit(slot.capacity + 1, 0, "X")
    ring.close()


def test_a_record_acknowledged_behind_one_never_committed_is_recovered(tmp_path: Path) -> None:
    """Two associations: the first places its record and stalls; the second commits behind it."""
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    stalled = ring.reserve(50_000)
    stalled.write(0, b"\x01" * 10_000)  # part of its data, never committed (crash)
    acknowledged = append(ring, record(3))
    ring.close()

    again = DurableRing(tmp_path / "ring", 1 << 20)
    found = again.open()
    assert [e.seq for e in found] == [acknowledged]  # stepped over the pending record by its span
    assert again.read(found[0]) == record(3)
    assert append(again, record(4)) == acknowledged + 1
    again.close()


def test_a_released_slot_frees_its_space_like_a_record(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    refused = ring.reserve(200_000)  # an instance refused after its slot was placed
    kept = append(ring, record(5))
    ring.release([refused.seq])
    assert ring.live == 1
    assert checkpoint(tmp_path)[0] == kept
    ring.close()


def test_records_of_the_previous_format_are_replayed_after_an_upgrade(tmp_path: Path) -> None:
    """What an older release acknowledged before a crash comes back, and new records follow it."""
    size = 1 << 20
    old = [record(1), record(2, 30_000)]
    with open(tmp_path / "ring", "wb") as fh:
        fh.write(bytes(size))
        offset = 0
        for seq, data in enumerate(old, start=1):
            head = HEADER_V1.pack(MAGIC_V1, seq, len(data), hashlib.sha256(data).digest(), b"MODALITY")
            fh.seek(offset)
            fh.write(head + CRC.pack(zlib.crc32(head)) + data)
            offset += (HEADER_V1_SIZE + len(data) + ALIGN - 1) // ALIGN * ALIGN
    (tmp_path / "ring.checkpoint").write_text("1 0\n")

    ring = DurableRing(tmp_path / "ring", size)
    found = ring.open()
    assert [e.seq for e in found] == [1, 2]
    assert [ring.read(e) for e in found] == old
    new = append(ring, record(3))
    assert new == 3
    ring.release([1, 2])
    ring.close()

    again = DurableRing(tmp_path / "ring", size)
    assert [(e.seq, again.read(e)) for e in again.open()] == [(3, record(3))]
    again.close()


def test_records_of_version_2_are_checked_by_their_sha256_and_replayed(tmp_path: Path) -> None:
    """Version 2 headers carried a sha256 of the data; a release with CRC-32C headers still reads them."""
    size = 1 << 20
    whole, torn = record(1), record(2, 30_000)
    with open(tmp_path / "ring", "wb") as fh:
        fh.write(bytes(size))
        offset = 0
        for seq, data in enumerate([whole, torn], start=1):
            span = (HEADER_V2_SIZE + len(data) + ALIGN - 1) // ALIGN * ALIGN
            digest = hashlib.sha256(data).digest()
            head = HEADER_V2.pack(MAGIC_V2, seq, span, len(data), digest, b"MODALITY", True)
            fh.seek(offset)
            fh.write(head + CRC.pack(zlib.crc32(head)) + (data if seq == 1 else data[:-1] + b"!"))
            offset += span
    (tmp_path / "ring.checkpoint").write_text("1 0\n")

    ring = DurableRing(tmp_path / "ring", size)
    found = ring.open()
    assert [e.seq for e in found] == [1]  # the second's data no longer matches its sha256
    assert ring.read(found[0]) == whole
    assert found[0].sha256 == hashlib.sha256(whole).hexdigest()
    assert append(ring, record(3)) == 3  # version 3 records follow the old ones
    ring.close()


def test_a_record_is_checked_by_the_crc32c_of_its_data(tmp_path: Path) -> None:
    ring = DurableRing(tmp_path / "ring", 1 << 20)
    ring.open()
    entry = ring.append(record(4), "MODALITY")
    assert entry.crc32c == checksum(record(4)) == checksum(record(4)[100:], checksum(record(4)[:100]))
    assert entry.matches(record(4))
    assert not entry.matches(record(4)[:-1] + b"\x00")
    assert not entry.matches(record(4)[:-1])
    ring.close()
