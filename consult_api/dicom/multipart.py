"""Streaming multipart/related for DICOMweb: parts go straight to staged files, never to memory."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

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


@dataclass
class _PartState:
    headers: dict[str, str] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    writer: BlobWriter | None = None
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
            self._state.writer = self.store.open_writer()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._state.writer is not None:
            self._state.writer.write(data[start:end])

    def _on_part_end(self) -> None:
        state = self._state
        if state.writer is not None:
            # fsync is batched across all parts by the caller (BlobStore.make_durable).
            self.parts.append(ReceivedPart(state.content_type, staged=state.writer.finish(durable=False)))
            state.writer = None
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
        except BaseException:
            self.discard()
            raise
        if not self.parts:
            raise MalformedMultipart("the request carries no body parts")
        return self.parts

    def discard(self) -> None:
        if self._state.writer is not None:
            self._state.writer.abort()
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
