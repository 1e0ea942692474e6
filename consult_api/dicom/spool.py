"""C-STORE acknowledged once the instance is durable in a spool; indexed in group commits behind it.

Why: a storage SCU waits for each C-STORE-RSP before it sends the next instance, so a listener that
indexes inside the exchange (a transaction, an audit append and a commit per instance) spends most of
the association's time there. Here the receiving thread parses and checks the instance in memory
(the same checks as the index would make, read-only), appends it to a durable ring
(``storage.ring``: one ``fdatasync`` of blocks the ring file already owns), answers, and hands it to
one indexing thread that commits whatever has queued up, from every association, in one
transaction per sender, through the same ``ingest.store_parsed`` as STOW-RS. Instances too large for
the ring (or arriving while it is full) are spooled as their own fsynced file instead.

What an acknowledgement promises stays what it was: the instance is on disk and will be indexed.
The ring releases a record only after its blob copy and index rows are durable (one ``syncfs`` per
batch), so a crash at any point leaves it there for ``replay`` at the next start, which re-creates
a missing blob and indexes idempotently; the record carries the calling AE title, so the replay
knows whose it is. A release waits until the association's instances are indexed: when the SCU's
association ends, a query sees everything it sent.

Why the indexer is a thread and not a process of its own, although it slows the receiving thread
(the GIL and the CPU; 1,000 CT over one association: 1.31 ms per instance from C-STORE-RQ to the
last data byte with the indexer working beside it, 0.58 with indexing held back until the release):
built as a spawned process fed over a pipe (the same group commits, the header parsed again there),
the receiving thread's data phase fell to 0.85 ms, but the whole association got slower (351-394
against 378-467 instances/s, four alternating pairs) at 0.6 ms more CPU per instance: on two cores
the child, staging at 0.9-1.5 CPU-ms per instance, competed for the CPU instead of the GIL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.db import autocommit_connection, transaction
from consult_api.dicom import ingest, parsing
from consult_api.dicom.ingest import Admissions, IngestContext
from consult_api.dicom.parsing import DicomRejected, ParsedInstance
from consult_api.dicom.upper_layer import SUCCESS, StoreRequest
from consult_api.errors import StorageError
from consult_api.storage.blobs import BlobRef, BlobStore, BlobWriter, StagedBlob
from consult_api.storage.ring import DurableRing, RingEntry, RingFull, RingSlot, RingUnavailable, checksum

log = logging.getLogger("consult_api.dimse")

SPOOLED = ".dcm"
PARTIAL = ".part"
LINK = ".link"
BATCH_SIZE = 256
MAX_BACKLOG = 5000
RETRY_MAX_S = 5.0
RING_BYTES = 256 << 20
EARLY_HEADER_BYTES = 16 << 10
EARLY_HEADER_LIMIT = 4 << 20
FIRST_SLOT_BYTES = 1 << 20
LINGER_S = 0.25


@dataclass(frozen=True)
class Sender:
    """The registered node an association belongs to."""

    principal: Principal
    ae_title: str


class Ticket:
    """One association's acknowledged instances not yet indexed; its release waits for zero."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._open = 0

    def add(self) -> None:
        with self._cv:
            self._open += 1

    def done(self) -> None:
        with self._cv:
            self._open -= 1
            if self._open <= 0:
                self._cv.notify_all()

    def wait(self, timeout_s: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._open <= 0, timeout_s)


@dataclass(frozen=True)
class Spooled:
    """An acknowledged instance: a ring record or (too large for the ring) a spool file.

    ``ref`` is None for a record received live: its sha256 is computed by the indexer, off the
    path the sender waits on (the ring checks the record with a CRC-32C).
    """

    ref: BlobRef | None
    parsed: ParsedInstance
    sender: Sender
    ticket: Ticket | None = None
    entry: RingEntry | None = None
    path: Path | None = None
    replayed: bool = False


@dataclass
class _Backlog:
    queue: deque[Spooled] = field(default_factory=deque)
    pending: dict[str, Spooled] = field(default_factory=dict)
    """SOP Instance UID -> what is acknowledged under it but not yet indexed."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_address(item: Spooled, unhashed: bytes | None) -> str:
    """An item's sha256: known (spool files, replays) or computed from its record's bytes."""
    if item.ref is not None:
        return item.ref.sha256
    assert unhashed is not None
    return _sha256(unhashed)


def file_meta(request: StoreRequest) -> bytes:
    """Preamble, 'DICM' and the file meta group for a C-STORE data set (PS3.10 7.1).

    Encoded here (explicit VR little endian, eight elements) rather than by pydicom's
    ``write_file_meta_info``, which cost a tenth of a millisecond per instance in the answer's path.
    """
    elements = b"".join(
        [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _even(request.sop_class_uid, b"\x00")),
            _meta_element(0x0003, b"UI", _even(request.sop_instance_uid, b"\x00")),
            _meta_element(0x0010, b"UI", _even(request.transfer_syntax_uid, b"\x00")),
            _meta_element(0x0012, b"UI", _even(PYNETDICOM_IMPLEMENTATION_UID, b"\x00")),
            _meta_element(0x0013, b"SH", _even(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
            _meta_element(0x0016, b"AE", _even(request.calling_ae_title, b" ")),
        ]
    )
    group_length = _meta_element(0x0000, b"UL", struct.pack("<L", len(elements)))
    return b"\x00" * 128 + b"DICM" + group_length + elements


def _even(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # long form: two reserved bytes and a 32-bit length
        return struct.pack("<HH", 0x0002, element) + vr + b"\x00\x00" + struct.pack("<L", len(value)) + value
    if len(value) > 0xFFFF:
        raise ValueError("file meta value too long")
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def answer(exc: DicomRejected) -> tuple[int, str]:
    """The C-STORE status and error comment (at most 64 characters, PS3.7) for a refusal."""
    return exc.reason, exc.message[:64]


def seal(writer: BlobWriter) -> StagedBlob:
    """Rename a spool file from ``.part`` to ``.dcm`` and fsync both: replay takes only ``.dcm``."""
    return writer.finish_durable_as(writer.path.with_suffix(SPOOLED))


class Refusal:
    """Receives and drops a data set the association may not store (the answer is fixed up front)."""

    def __init__(self, status: int, comment: str) -> None:
        self.status = status
        self.comment = comment

    def write(self, data: memoryview) -> None:
        return None

    def finish(self) -> tuple[int, str | None]:
        return self.status, self.comment

    def abort(self) -> None:
        return None


class SenderAssociation:
    """One association's state in the spool: its sender, open instances, admission cache, connection.

    One autocommit connection serves every admission check of the association: no session or
    transaction per instance, and no read transaction left open on the index.
    """

    def __init__(self, sender: Sender, session_factory: sessionmaker[Session]) -> None:
        self.sender = sender
        self.ticket = Ticket()
        self.expected_size = FIRST_SLOT_BYTES
        """Ring space placed for the next instance: the last one's size, as series repeat sizes."""
        self.admitted = Admissions()
        self._session_factory = session_factory
        self._connection: Connection | None = None

    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = autocommit_connection(self._session_factory)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass(frozen=True)
class EarlyHeader:
    """A header parsed and checked against the index while the instance's pixels were arriving."""

    parsed: ParsedInstance
    pixel_data_at: int
    stored_sha256: str | None


class SpoolReceiver:
    """One instance arriving: in memory while it fits the ring, spilled to a spool file beyond.

    While the fragments arrive they are hashed and written into a ring slot placed for them (sized
    by the association's last instance), and the header is parsed and checked as soon as they reach
    Pixel Data. The answer then waits only for the completeness check and the slot's commit (its
    header and one ``fdatasync``). Refused instances and re-sends write nothing that stays.
    """

    def __init__(self, spool: DimseSpool, association: SenderAssociation, request: StoreRequest) -> None:
        self.spool = spool
        self.association = association
        self.request = request
        meta = file_meta(request)
        self.chunks = [meta]
        """The instance so far, one ``bytes`` per fragment: joined once, not regrown per fragment."""
        self.size = self.dataset_start = len(meta)
        self.crc32c = checksum(meta)
        self.writer: BlobWriter | None = None
        self.early: EarlyHeader | None = None
        self.refused: DicomRejected | None = None
        self._look_at = EARLY_HEADER_BYTES
        self.slot = spool.reserve(association.expected_size)
        if self.slot is not None:
            self._stream(0, meta)

    @property
    def data(self) -> bytes:
        """What has arrived, as one ``bytes`` (joined on demand)."""
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""

    def write(self, data: memoryview) -> None:
        if self.refused is not None:
            return  # the answer is decided: the rest of the data set is read and dropped
        if self.writer is not None:
            self.writer.write(data)
        elif self.size + len(data) <= self.spool.ring.max_record:
            if self.slot is not None:
                self._stream(self.size, data)
            chunk = bytes(data)  # its own copy: the association reuses its read buffer
            self.chunks.append(chunk)
            self.size += len(chunk)
            self.crc32c = checksum(chunk, self.crc32c)
            if self.size >= self._look_at:
                self._look_early()
        else:
            self._release_slot()
            self.writer = self.spool.spool_file()
            self.writer.write(self.data)
            self.writer.write(data)
            self.chunks = []

    def _look_early(self) -> None:
        """Try the header on what has arrived; tried again on four times as much, up to a limit.

        Growing the prefix geometrically bounds the parses wasted on a long header to a third of
        one full parse; an instance whose header is not found early is parsed whole at the end.
        """
        self._look_at = self.size * 4 if self.size * 4 <= EARLY_HEADER_LIMIT else sys.maxsize
        found = parsing.parse_received_prefix(self.data, self.dataset_start, self.request.transfer_syntax_uid)
        if found is None:
            return
        self._look_at = sys.maxsize
        parsed, pixel_data_at = found
        try:
            stored = self.spool.admission(parsed, self.request, self.association)
        except DicomRejected as exc:
            self.refused = exc
            self.chunks = []
            self._release_slot()
            return
        self.early = EarlyHeader(parsed, pixel_data_at, stored)

    def _stream(self, position: int, data: bytes | memoryview) -> None:
        """Into the slot while the instance fits it; past that, the whole record goes at the end."""
        assert self.slot is not None
        if position + len(data) > self.slot.capacity:
            self._release_slot()
            return
        try:
            self.slot.write(position, data)
        except OSError:
            self._release_slot()  # the end-of-instance write reports what is wrong with the disk

    def _release_slot(self) -> None:
        """Give the slot back unless its record was committed (then the indexer releases it)."""
        if self.slot is not None and not self.slot.committed:
            self.spool.ring.release([self.slot.seq])
        self.slot = None

    def finish(self) -> tuple[int, str | None]:
        try:
            if self.refused is not None:
                return answer(self.refused)
            if self.writer is not None:
                return self.spool.admit_file(seal(self.writer), self.association, self.request)
            self.association.expected_size = self.size + self.size // 8
            return self.spool.admit_buffer(
                self.data, self.crc32c, self.association, self.request, self.early, self.slot
            )
        except StorageError as exc:
            return parsing.OUT_OF_RESOURCES, str(exc)[:64]
        finally:
            self._release_slot()  # a refused instance or a re-send does not keep its ring space

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        self._release_slot()
        self.chunks = []


class DimseSpool:
    """The spool folder, its backlog and the one thread that indexes it."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: BlobStore,
        *,
        batch_size: int = BATCH_SIZE,
        max_backlog: int = MAX_BACKLOG,
        ring_bytes: int = RING_BYTES,
        linger_s: float = LINGER_S,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.directory = store.spool_dir("dimse")
        self.ring = DurableRing(self.directory / "ring", ring_bytes)
        self.rejected = store.spool_dir("dimse-rejected")
        self.batch_size = batch_size
        self.max_backlog = max_backlog
        self._backlog = _Backlog()
        self._cv = threading.Condition()
        self._stopping = False
        self._flush = False
        self._healthy = True
        self._thread: threading.Thread | None = None
        self.linger_s = linger_s

    def reserve(self, capacity: int) -> RingSlot | None:
        """Ring space for an instance about to arrive; None while the ring has no room for it."""
        try:
            return self.ring.reserve(min(capacity, self.ring.max_record))
        except (RingFull, OSError):
            return None

    def spool_file(self) -> BlobWriter:
        """A file for one instance that the ring cannot take; ``seal`` makes it durable."""
        return BlobWriter(self.directory, suffix=PARTIAL)

    def association(self, sender: Sender) -> SenderAssociation:
        return SenderAssociation(sender, self.session_factory)

    # ------------------------------------------------------------------ lifecycle

    def start(self, sender_for: Callable[[str], Sender | None]) -> None:
        """Queue what a previous run acknowledged but did not index, then start indexing."""
        self.replay(sender_for)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dimse-indexer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Index what is queued (up to ``timeout_s``); anything left stays spooled for the next start."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.ring.close()

    @property
    def backlog(self) -> int:
        with self._cv:
            return len(self._backlog.pending)

    def receiver(self, association: SenderAssociation, request: StoreRequest) -> SpoolReceiver | Refusal:
        try:
            return SpoolReceiver(self, association, request)
        except (ValueError, TypeError) as exc:  # a command whose UIDs cannot make a file meta
            return Refusal(parsing.DATASET_DOES_NOT_MATCH, f"cannot record the instance: {exc}"[:64])

    # ------------------------------------------------------------------ admission (receiving thread)

    def admit_buffer(
        self,
        data: bytes,
        crc32c: int,
        association: SenderAssociation,
        request: StoreRequest,
        early: EarlyHeader | None = None,
        slot: RingSlot | None = None,
    ) -> tuple[int, str | None]:
        """Check an instance received in memory, make it durable in the ring, queue it.

        ``crc32c`` is the ring's ``checksum`` of ``data``. Its sha256 is computed here only for a
        UID stored already (same bytes or not decides the answer); otherwise by the indexer. With
        ``early``, its header was parsed and checked while it arrived: only completeness and
        the digest are left to judge. With ``slot``, its bytes are in the ring already and only
        need committing; the caller releases a slot left uncommitted (a refusal or a re-send).
        """
        try:
            if early is None:
                parsed, pixel_data_at = parsing.header_in(data)
                stored = self.admission(parsed, request, association)
            else:
                parsed, pixel_data_at, stored = early.parsed, early.pixel_data_at, early.stored_sha256
            parsing.check_complete_in(parsed, data, pixel_data_at)
            if stored is not None and ingest.is_duplicate(stored, _sha256(data), parsed):
                return SUCCESS, None  # the same bytes are stored already
        except DicomRejected as exc:
            return answer(exc)
        item = self._make_durable(data, crc32c, parsed, association, slot)
        return self._enqueue(item, data)

    def _make_durable(
        self,
        data: bytes,
        crc32c: int,
        parsed: ParsedInstance,
        association: SenderAssociation,
        slot: RingSlot | None,
    ) -> Spooled:
        """The slot committed, a ring record, or a fsynced spool file while the ring has no room."""
        sender = association.sender
        try:
            if slot is not None:
                entry = slot.commit(len(data), crc32c, sender.ae_title)
            else:
                entry = self.ring.append(data, sender.ae_title)
            return Spooled(None, parsed, sender, association.ticket, entry=entry)
        except RingFull:
            writer = self.spool_file()
            writer.write(data)
            staged = seal(writer)
            return Spooled(staged.ref, parsed, sender, association.ticket, path=staged.path)
        except OSError as exc:
            raise StorageError(f"spool write failed: {exc.strerror}") from exc

    def admit_file(
        self, staged: StagedBlob, association: SenderAssociation, request: StoreRequest
    ) -> tuple[int, str | None]:
        """Check a durable spool file (an instance too large for the ring) and queue it."""
        try:
            parsed = parsing.parse_instance(staged.path)
            duplicate = ingest.is_duplicate(
                self.admission(parsed, request, association), staged.ref.sha256, parsed
            )
        except DicomRejected as exc:
            staged.discard()
            return answer(exc)
        if duplicate:
            staged.discard()
            return SUCCESS, None
        item = Spooled(staged.ref, parsed, association.sender, association.ticket, path=staged.path)
        return self._enqueue(item)

    def admission(
        self, parsed: ParsedInstance, request: StoreRequest, association: SenderAssociation
    ) -> str | None:
        """Raises ``DicomRejected`` as the index would; else the digest stored under the UID, if any."""
        if (parsed.sop_instance_uid, parsed.sop_class_uid) != (
            request.sop_instance_uid,
            request.sop_class_uid,
        ):
            raise DicomRejected(
                parsing.DATASET_DOES_NOT_MATCH, "data set SOP Class/Instance UID differ from the C-STORE-RQ"
            )
        if not self._healthy or self.backlog >= self.max_backlog:
            raise DicomRejected(parsing.OUT_OF_RESOURCES, "indexing is behind; send again later")
        try:
            principal = association.sender.principal
            return ingest.check_admissible(association.connection(), principal, association.admitted, parsed)
        except SQLAlchemyError as exc:
            log.warning("C-STORE refused: index unavailable", extra={"error": type(exc).__name__})
            association.close()  # a fresh connection for the next instance
            raise DicomRejected(parsing.OUT_OF_RESOURCES, "index unavailable; send again later") from exc

    def _enqueue(self, item: Spooled, data: bytes | None = None) -> tuple[int, str | None]:
        """Queue ``item`` for indexing, unless its UID is queued already (then compare the bytes).

        ``data``: the item's bytes where the caller still holds them (a record received live, whose
        sha256 is not known yet); items that come with a ``ref`` need none.
        """
        uid = item.parsed.sop_instance_uid
        with self._cv:
            pending = self._backlog.pending.get(uid)
            if pending is None:
                self._backlog.pending[uid] = item
                self._backlog.queue.append(item)
                if item.ticket is not None:
                    item.ticket.add()
                self._cv.notify()
                return SUCCESS, None
            # Read under the lock (a pending record is released only after it has left ``pending``),
            # hashed outside it: the receivers and the indexer wait on this lock.
            pending_bytes = self._unhashed_bytes(pending)
        try:  # sent twice in quick succession
            pending_sha256 = _content_address(pending, pending_bytes)
            ingest.is_duplicate(pending_sha256, _content_address(item, data), item.parsed)
        except DicomRejected as exc:
            return answer(exc)
        finally:
            self._forget(item)
        return SUCCESS, None

    def _unhashed_bytes(self, item: Spooled) -> bytes | None:
        """A queued ring record's bytes while its sha256 is not known yet (None once it is)."""
        if item.ref is not None:
            return None
        assert item.entry is not None
        return self.ring.read(item.entry)

    def _forget(self, item: Spooled) -> None:
        """An item that is not queued after all: its spool file or ring record is not needed."""
        if item.path is not None:
            item.path.unlink(missing_ok=True)
        if item.entry is not None:
            self.ring.release([item.entry.seq])

    # ------------------------------------------------------------------ indexing (its own thread)

    def flush_soon(self) -> None:
        """Someone waits for the queue (an association's release): stop lingering, index now."""
        with self._cv:
            self._flush = True
            self._cv.notify_all()

    def _next_batch(self) -> list[Spooled] | None:
        """The next group commit: waits for a first item, then lingers for company.

        Why linger: a commit costs the same whether it carries one instance or two hundred (a
        transaction, an audit append, counters, a filesystem sync), and an indexer that commits each
        instance as it comes competes with the receiving thread for the GIL and the disk all the
        time. Nobody waits on the index in between: the sender got its answer already.
        """
        queue = self._backlog.queue
        with self._cv:
            while not queue and not self._stopping:
                self._cv.wait()
            deadline = time.monotonic() + self.linger_s
            while len(queue) < self.batch_size and not (self._stopping or self._flush):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            self._flush = False
            if not queue:
                return None
            return [queue.popleft() for _ in range(min(len(queue), self.batch_size))]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            groups: dict[str, list[Spooled]] = {}
            for item in batch:
                groups.setdefault(item.sender.ae_title, []).append(item)
            for group in groups.values():
                if self._index_until_done(group):
                    self.ring.release(item.entry.seq for item in group if item.entry is not None)

    def _index_until_done(self, group: list[Spooled]) -> bool:
        delay = 0.1
        while True:
            try:
                self._index(group)
                self._healthy = True
                return True
            except (SQLAlchemyError, StorageError, OSError) as exc:
                self._healthy = False
                log.error(
                    "DIMSE indexing failed; instances stay spooled and are retried",
                    extra={"error": type(exc).__name__, "instances": len(group)},
                )
                if self._stopping:
                    return False  # still spooled: the next start replays them
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _index(self, batch: list[Spooled]) -> None:
        group: list[Spooled] = []
        staged: list[StagedBlob] = []
        try:
            for item in batch:
                blob = self._stage(item)
                if blob is not None:
                    group.append(item)
                    staged.append(blob)
            outcomes = self._commit(group, staged) if group else []
        finally:
            for blob in staged:
                blob.discard()
        for item, outcome in zip(group, outcomes, strict=True):
            if not outcome.ok:
                self._quarantine(item, outcome.failure_reason, outcome.message)
            if item.path is not None:
                item.path.unlink(missing_ok=True)  # ring records: released by the caller
        with self._cv:
            for item in batch:
                self._backlog.pending.pop(item.parsed.sop_instance_uid, None)
        for item in batch:
            if item.ticket is not None:
                item.ticket.done()

    def _commit(self, group: list[Spooled], staged: list[StagedBlob]) -> list[ingest.StoreOutcome]:
        with transaction(self.session_factory) as session:
            ctx = IngestContext(principal=group[0].sender.principal, via="dimse", defer_dir_sync=True)
            items = [(blob, item.parsed) for blob, item in zip(staged, group, strict=True)]
            outcomes = ingest.store_parsed(session, self.store, ctx, items)
            ingest.finish(session, ctx, audit.record)
        # Blobs and their renames durable before the spool lets go of its copies.
        self.store.sync_all(written=[blob.ref for blob in staged])
        return outcomes

    def _stage(self, item: Spooled) -> StagedBlob | None:
        """A second name (spool file) or a copy (ring record) in the store, which the commit renames.

        A ring record is read back, checked against its CRC and written through a ``BlobWriter``,
        which computes its content address on the way. One that no longer matches its CRC (the
        disk changed it under us) is quarantined, not stored under the wrong bytes' name: None.
        Replayed items are published at once: after a power loss their blob may be gone while their
        index row (a duplicate now) survived, and the index would not publish a duplicate again.
        """
        if item.path is not None:
            assert item.ref is not None
            link = item.path.with_suffix(LINK)
            link.unlink(missing_ok=True)
            os.link(item.path, link)  # same filesystem: no bytes copied
            staged = StagedBlob(link, item.ref)
        else:
            assert item.entry is not None
            data = self.ring.read(item.entry)
            if not item.entry.matches(data):
                self._quarantine(item, None, "spool ring record damaged before indexing")
                return None
            writer = self.store.open_writer()
            writer.write(data)
            staged = writer.finish(durable=False)
        if item.replayed:
            self.store.commit(staged, sync_dir=False)
        return staged

    def _quarantine(self, item: Spooled, reason: int | None, message: str) -> None:
        """Acknowledged, then refused by the index (a race the admission check could not see)."""
        name = "unreadable"
        with contextlib.suppress(OSError):
            if item.entry is not None:
                data = self.ring.read(item.entry)
                name = f"{_sha256(data)}{SPOOLED}"
                (self.rejected / name).write_bytes(data)
            elif item.path is not None:
                name = f"{_content_address(item, None)}{SPOOLED}"
                os.replace(item.path, self.rejected / name)
        log.warning(
            "acknowledged C-STORE refused at indexing; kept for an administrator",
            extra={"reason": reason, "detail": message, "file": name},
        )

    # ------------------------------------------------------------------ replay at start

    def replay(self, sender_for: Callable[[str], Sender | None]) -> int:
        """Queue what a previous run acknowledged and did not index; drop what it never finished."""
        queued = 0
        try:
            entries = self.ring.open()
        except RingUnavailable as exc:
            # Still correct without it, only slower: every instance is spooled as its own file.
            log.error("DIMSE spool ring unavailable; spooling to files", extra={"reason": str(exc)})
            self.ring.max_record = 0
            entries = []
        for entry in entries:
            item = self._recovered(self.ring.read(entry), entry.tag, sender_for)
            if item is not None:
                queued += self._enqueue(replace(item, entry=entry, replayed=True))[0] == SUCCESS
        for path in sorted(self.directory.iterdir()):
            if path.suffix in (PARTIAL, LINK):
                path.unlink(missing_ok=True)  # never acknowledged
            elif path.suffix == SPOOLED:
                item = self._recovered(path.read_bytes(), None, sender_for)
                if item is None:
                    os.replace(path, self.rejected / path.name)
                else:
                    queued += self._enqueue(replace(item, path=path, replayed=True))[0] == SUCCESS
        if queued:
            log.info("DIMSE spool replayed", extra={"instances": queued})
        return queued

    def _recovered(
        self, data: bytes, ae_title: str | None, sender_for: Callable[[str], Sender | None]
    ) -> Spooled | None:
        """The spooled bytes as a queue item, or None (logged) when they cannot be indexed."""
        try:
            parsed = parsing.parse_buffer(data)
        except DicomRejected as exc:
            log.warning("spooled instance unreadable; not replayed", extra={"detail": exc.message})
            return None
        if ae_title is None:
            meta = getattr(parsed.dataset, "file_meta", None)
            ae_title = str(getattr(meta, "SourceApplicationEntityTitle", "") or "").strip()
        sender = sender_for(ae_title)
        if sender is None:
            log.warning("spooled instance of an AE title no longer registered; not replayed")
            return None
        return Spooled(BlobRef(_sha256(data), len(data)), parsed, sender)
