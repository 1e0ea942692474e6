"""Streaming multipart/related for DICOMweb: parts go straight to staged files, never to memory."""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from consult_api.dicom import parsing
from consult_api.dicom.parsing import DicomRejected, ParsedInstance
from consult_api.errors import HoichanError, PayloadTooLarge
from consult_api.storage.blobs import BlobStore, BlobWriter, StagedBlob

DICOM_MEDIA_TYPE = "application/dicom"


class UnsupportedMediaType(HoichanError):
    status_code = 415
    title = "Unsupported media type"


class MalformedMultipart(HoichanError):
    status_code = 400
    title = "Malformed request"


@dataclass
class ReceivedPart:
    """One body part: staged when it is application/dicom, otherwise refused with a reason."""

    content_type: str
    staged: StagedBlob | None = None
    refusal: str | None = None
    parsed: ParsedInstance | None = None
    """The header, read as soon as the part was written; None where it failed (the index reports why)."""


@dataclass
class _PartState:
    headers: dict[str, str] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    staging: bool = False
    content_type: str = ""


def related_boundary(content_type_header: str, expected_type: str = DICOM_MEDIA_TYPE) -> bytes:
    """The boundary of a ``multipart/related; type="application/dicom"`` request, or 415."""
    media_type, params = parse_options_header(content_type_header)
    if media_type != b"multipart/related":
        raise UnsupportedMediaType(
            f'expected multipart/related; type="{expected_type}", got {media_type.decode()!r}'
        )
    declared = params.get(b"type", b"").decode().strip('"').lower()
    if declared and declared != expected_type:
        raise UnsupportedMediaType(
            f"multipart/related parts must be {expected_type}, request declares {declared!r}"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedMultipart("multipart/related without a boundary parameter")
    return boundary.strip(b'"')


STAGERS = 2


class _Stager:
    """Writes, hashes and parses the parts on a thread of its own, in the order they arrive.

    Why: hashing and writing a 26 MB request is ~20 ms of C work per request that releases the GIL;
    done here, it runs on the second core while the event loop parses the next chunks, instead of
    in line with them. Each part's header is read here too, while the next part is still arriving
    (50 CT headers: 10-25 ms that the client no longer waits for after its last byte). A bounded
    queue keeps memory at a few chunks when the disk is slower.

    Parts are written through the page cache and their header parsed from the writer's in-memory
    head; the request gives the pages back after its sync (``sync_all(written=...)``), so the next
    request writes into them instead of new ones, which on this VM cost a host fault each. Written
    past the page cache (``O_DIRECT``) instead, each stager waited for the disk per part (a median
    377 against 397 instances/s, eleven alternating pairs of 1,000 CT; see ``sync_all``).

    Two of them take turns by part: creating a file and its folder cost ~0.35 ms per instance on
    this disk, hashing and writing 525 KB another ~0.5 ms, nearly all outside the GIL, so one
    stager was what the event loop waited on (20 ms of each 50-instance request).
    """

    QUEUE_CHUNKS = 32

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.error: Exception | None = None
        self._jobs: queue.Queue[tuple[str, Any]] = queue.Queue(self.QUEUE_CHUNKS)
        self._writer: BlobWriter | None = None
        self._thread = threading.Thread(target=self._run, name="stow-stager", daemon=True)
        self._thread.start()

    def open(self) -> None:
        self._jobs.put(("open", None))

    def write(self, data: bytes | memoryview) -> None:
        self._jobs.put(("write", data))

    def finish(self, part: ReceivedPart) -> None:
        self._jobs.put(("finish", part))

    def close(self) -> None:
        """Wait for every queued write; raises the first error the thread met."""
        self._jobs.put(("close", None))
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            action, item = self._jobs.get()
            if action == "close":
                if self._writer is not None:
                    self._writer.abort()
                return
            if self.error is not None:
                continue  # drain: the request fails as a whole
            try:
                self._do(action, item)
            except Exception as exc:  # noqa: BLE001 - re-raised by close() in the request
                self.error = exc
                if self._writer is not None:
                    self._writer.abort()
                    self._writer = None

    def _do(self, action: str, item: Any) -> None:
        if action == "open":
            self._writer = self.store.open_writer(keep_head=parsing.HEAD_BYTES)
        elif action == "write" and self._writer is not None:
            self._writer.write(item)
        elif action == "finish" and self._writer is not None:
            writer, self._writer = self._writer, None
            item.staged = writer.finish(durable=False)  # made durable by the caller, all at once
            head = writer.head  # parsed from memory: no read of the file back
            with contextlib.suppress(DicomRejected):  # parsed again by the index, which says why
                item.parsed = parsing.parse_instance(item.staged.path, head=head)
            self.store.prepare(item.staged.ref)


class RelatedReceiver:
    """Feeds a multipart/related body to python-multipart and stages each DICOM part."""

    def __init__(self, boundary: bytes, store: BlobStore, *, max_bytes: int, max_parts: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_parts = max_parts
        self.parts: list[ReceivedPart] = []
        self.received = 0
        self._state = _PartState()
        self._finished = False
        self._stagers: list[_Stager] = []
        self._stager: _Stager | None = None
        """The current part's: parts alternate between ``STAGERS`` threads, each in arrival order."""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def _on_part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise PayloadTooLarge(f"at most {self.max_parts} instances per request")
        self._state = _PartState()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._state.header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._state.header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._state.header_field.decode("latin-1").strip().lower()
        self._state.headers[name] = self._state.header_value.decode("latin-1").strip()
        self._state.header_field = self._state.header_value = b""

    def _on_headers_finished(self) -> None:
        media_type, _ = parse_options_header(self._state.headers.get("content-type", DICOM_MEDIA_TYPE))
        self._state.content_type = media_type.decode()
        if self._state.content_type == DICOM_MEDIA_TYPE:
            turn = len(self.parts) % STAGERS
            if turn == len(self._stagers):
                self._stagers.append(_Stager(self.store))
            self._stager = self._stagers[turn]
            self._stager.open()
            self._state.staging = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._state.staging and self._stager is not None:
            # A view, not a copy: ``data`` is the fed chunk (or the boundary), immutable bytes.
            self._stager.write(memoryview(data)[start:end])

    def _on_part_end(self) -> None:
        state = self._state
        if state.staging and self._stager is not None:
            part = ReceivedPart(state.content_type)
            self._stager.finish(part)  # ``part.staged`` is filled in by the stager
            self.parts.append(part)
            state.staging = False
        else:
            refusal = f"part content type {state.content_type!r} is not {DICOM_MEDIA_TYPE}"
            self.parts.append(ReceivedPart(state.content_type, refusal=refusal))

    def _on_end(self) -> None:
        self._finished = True

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise PayloadTooLarge(f"a STOW-RS request may carry at most {self.max_bytes} bytes")
        try:
            self._parser.write(chunk)
        except HoichanError:
            raise
        except Exception as exc:
            raise MalformedMultipart(f"malformed multipart body: {exc}") from exc

    async def consume(self, body: AsyncIterator[bytes]) -> list[ReceivedPart]:
        """Read the whole body; on any error every staged part is removed before re-raising."""
        try:
            async for chunk in body:
                self.feed(chunk)
            self._parser.finalize()
            if not self._finished:
                raise MalformedMultipart("multipart body ended before its closing boundary")
            self._close_stager()
        except BaseException:
            self.discard()
            raise
        if not self.parts:
            raise MalformedMultipart("the request carries no body parts")
        return self.parts

    def _close_stager(self) -> None:
        """Every stager's writes ended; raises the first error any of them met."""
        stagers, self._stagers, self._stager = self._stagers, [], None
        errors: list[Exception] = []
        for stager in stagers:
            try:
                stager.close()
            except Exception as exc:  # noqa: BLE001 - the others must still end before files go
                errors.append(exc)
        if errors:
            raise errors[0]

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._close_stager()  # its writes end (or fail) before their files are removed
        for part in self.parts:
            if part.staged is not None:
                part.staged.discard()


def new_boundary() -> str:
    return f"hoichan-{secrets.token_hex(12)}"


def related_stream(parts: Iterable[Iterable[bytes]], boundary: str, content_type: str) -> Iterator[bytes]:
    """Write parts as multipart/related, streaming each part's chunks."""
    for part in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield from part
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
