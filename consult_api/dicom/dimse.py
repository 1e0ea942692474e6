"""The DIMSE listener: C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE over the same index and rules.

Every connection starts in pynetdicom's threaded acceptor. An association that proposes only
storage and verification (a modality or PACS pushing a study: nearly all traffic) is served by the
storage-only upper layer in ``upper_layer`` and acknowledged from the durable spool in ``spool``;
anything else (query/retrieve, role selection) stays with pynetdicom, whose handlers are thin
adapters: C-STORE inside such an association goes through ``ingest.store_staged`` like STOW-RS, and
queries through the QIDO matcher with the calling node's rights. Either way the calling AE title
must be a registered node.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.db import transaction
from consult_api.dicom import ingest, nodes, parsing, qido, repository, upper_layer
from consult_api.dicom.ingest import IngestContext
from consult_api.dicom.models import DicomNode, Instance
from consult_api.dicom.spool import LINGER_S, RING_BYTES, DimseSpool, Refusal, Sender, SpoolReceiver
from consult_api.storage.blobs import BlobStore

log = logging.getLogger("consult_api.dimse")

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
NOT_AUTHORIZED = 0x0124
QUERY_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
LEVELS = {
    "PATIENT": qido.Level.study,
    "STUDY": qido.Level.study,
    "SERIES": qido.Level.series,
    "IMAGE": qido.Level.instance,
}


RELEASE_WAIT_S = 120.0


@dataclass(frozen=True)
class CallingNode:
    principal: Principal
    may_store: bool
    may_query: bool
    ae_title: str = ""


class _RoutingServer(ThreadedAssociationServer):
    """pynetdicom's threaded acceptor; ``route`` may take a connection before pynetdicom sees it."""

    route: Any = None  # Callable[[socket.socket], bool], set by DimseListener.start

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            handled = bool(self.route(request))
        except Exception:
            log.exception("storage association failed")
            handled = True
        if handled:
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


class _AssociationSink:
    """A fast-path association's view of the spool: its node and its state there."""

    def __init__(self, spool: DimseSpool, node: CallingNode) -> None:
        self.spool = spool
        self.node = node
        self.state = spool.association(Sender(node.principal, node.ae_title))

    def open_instance(self, request: upper_layer.StoreRequest) -> SpoolReceiver | Refusal:
        if not self.node.may_store:
            return Refusal(NOT_AUTHORIZED, "this AE title may not store")
        return self.spool.receiver(self.state, request)

    def release(self) -> None:
        self.spool.flush_soon()
        if not self.state.ticket.wait(RELEASE_WAIT_S):
            log.warning("association released before its instances were indexed; they stay spooled")


class DimseListener:
    """Owns the pynetdicom AE; started by ``hoichan serve`` or ``hoichan dimse``."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: BlobStore,
        *,
        ae_title: str,
        host: str,
        port: int,
        spool_ring_bytes: int = RING_BYTES,
        index_linger_s: float = LINGER_S,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.address = (host, port)
        self.ae = self._build_ae(ae_title)
        self.server: ThreadedAssociationServer | None = None
        self.spool = DimseSpool(session_factory, store, ring_bytes=spool_ring_bytes, linger_s=index_linger_s)
        self._storage_classes = frozenset(
            str(c.abstract_syntax) for c in AllStoragePresentationContexts if c.abstract_syntax is not None
        )
        self._fast_sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _build_ae(ae_title: str) -> AE:
        ae = AE(ae_title=ae_title)
        ae.maximum_pdu_size = 0  # unlimited: fewer, larger PDUs
        ae.add_supported_context(Verification)
        syntaxes = sorted(parsing.SUPPORTED_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                # Both roles accepted in SCP/SCU role selection: C-GET sends instances back to the
                # requestor on its own association, which makes us the Storage SCU there.
                ae.add_supported_context(context.abstract_syntax, syntaxes, scu_role=True, scp_role=True)
        for model in QUERY_MODELS:
            ae.add_supported_context(model)
        return ae

    @property
    def port(self) -> int:
        if self.server is None:
            return self.address[1]
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.spool.start(self._sender_for)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_DATA_RECV, _rearm_quickack),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
        ]
        server = cast(
            _RoutingServer,
            self.ae.make_server(self.address, evt_handlers=handlers, server_class=_RoutingServer),
        )
        server.route = self._route
        self.ae._servers.append(server)  # as AE.start_server does: AssociationServer.shutdown removes it
        threading.Thread(target=server.serve_forever, name="dimse-acceptor", daemon=True).start()
        self.server = server
        log.info("DIMSE listener started", extra={"ae_title": self.ae.ae_title, "port": self.port})

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        with self._lock:
            for sock in self._fast_sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.spool.stop()

    # ------------------------------------------------------------------ storage-only associations

    def _route(self, sock: socket.socket) -> bool:
        """Serve the connection here if it asks for a storage-only association; else leave it be."""
        try:
            data = upper_layer.peek_associate_rq(sock, float(self.ae.acse_timeout or 30))
        except upper_layer.PeerClosed:
            return True  # nothing was asked: the socket is closed here, pynetdicom never sees it
        if data is None:
            return False
        try:
            request = upper_layer.decode_associate_rq(data)
        except Exception:  # noqa: BLE001 - malformed: pynetdicom answers it with the abort PS3.8 asks for
            return False
        if not upper_layer.is_storage_only(request, self._storage_classes):
            return False
        sock.recv(len(data), socket.MSG_WAITALL)  # consume the request peeked above
        self._serve_storage(sock, request)
        return True

    def _serve_storage(self, sock: socket.socket, request: Any) -> None:
        title = upper_layer.calling_ae_title(request)
        calling = self._node_for_title(title)
        if calling is None:
            log.warning("association rejected: unknown calling AE title")
            sock.sendall(upper_layer.reject_pdu(request, upper_layer.CALLING_AE_NOT_RECOGNIZED))
            return
        accept, contexts = upper_layer.negotiate(request, self.ae.supported_contexts)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(accept)
        sink = _AssociationSink(self.spool, calling)
        association = upper_layer.StorageAssociation(
            sock,
            contexts,
            sink,
            calling_ae=title,
            idle_timeout_s=float(self.ae.network_timeout or 60),
            after_read=_quickack,
        )
        with self._lock:
            self._fast_sockets.add(sock)
        try:
            association.serve()
        finally:
            sink.state.close()
            with self._lock:
                self._fast_sockets.discard(sock)
        log.info("storage association ended", extra={"stored": association.stored})

    def _sender_for(self, ae_title: str) -> Sender | None:
        calling = self._node_for_title(ae_title)
        return Sender(calling.principal, calling.ae_title) if calling is not None else None

    # ------------------------------------------------------------------ association control

    def _calling_node(self, event: Event) -> CallingNode | None:
        # At EVT_REQUESTED only the A-ASSOCIATE-RQ primitive carries the calling AE title.
        primitive = event.assoc.requestor.primitive
        raw = primitive.calling_ae_title if primitive is not None else event.assoc.requestor.ae_title
        return self._node_for_title(upper_layer.ae_title_text(raw))

    def _node_for_title(self, ae_title: str) -> CallingNode | None:
        with transaction(self.session_factory) as session:
            node = repository.node_by_ae_title(session, ae_title)
            return _calling(node) if node is not None else None

    def _on_requested(self, event: Event) -> None:
        """Reject associations from AE titles no facility has registered (PS3.8 reason 3)."""
        calling = self._calling_node(event)
        if calling is None:
            log.warning("association rejected: unknown calling AE title")
            # Rejected-permanent, service-user, calling AE title not recognized; then stop the
            # association exactly as pynetdicom does for its static require_calling_aet list.
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            event.assoc.is_rejected = True
            event.assoc.kill()
            return
        event.assoc.hoichan_node = calling  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ C-STORE

    def _on_store(self, event: Event) -> int:
        calling: CallingNode = event.assoc.hoichan_node  # type: ignore[attr-defined]
        if not calling.may_store:
            return NOT_AUTHORIZED
        staged = self.store.stage([event.encoded_dataset(include_meta=True)])
        with transaction(self.session_factory) as session:
            ctx = IngestContext(principal=calling.principal, via="dimse")
            outcome = ingest.store_staged(session, self.store, ctx, staged)
            ingest.finish(session, ctx, audit.record)
        if not outcome.ok:
            log.info("C-STORE refused", extra={"reason": outcome.failure_reason})
            return outcome.failure_reason or UNABLE_TO_PROCESS
        return SUCCESS

    # ------------------------------------------------------------------ C-FIND

    def _on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        calling: CallingNode = event.assoc.hoichan_node  # type: ignore[attr-defined]
        if not calling.may_query:
            yield NOT_AUTHORIZED, None
            return
        identifier: Dataset = event.identifier
        level = LEVELS.get(str(identifier.get("QueryRetrieveLevel", "")).upper())
        if level is None:
            yield IDENTIFIER_DOES_NOT_MATCH, None
            return
        with transaction(self.session_factory) as session:
            results = _find(session, self.store, calling.principal, level, identifier)
        for result in results:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, result
        yield SUCCESS, None

    # ------------------------------------------------------------------ C-GET / C-MOVE

    def _instances_for(self, calling: CallingNode, identifier: Dataset) -> list[Instance] | None:
        level = LEVELS.get(str(identifier.get("QueryRetrieveLevel", "")).upper())
        if level is None:
            return None
        with transaction(self.session_factory) as session:
            query = _query_from_identifier(qido.Level.instance, identifier, matching_only=True)
            found = list(qido.run_query(session, calling.principal, query))
            if found:
                study_uids = sorted({i.series.study.study_instance_uid for i in found})
                audit.record(
                    session,
                    calling.principal,
                    "dicom.retrieve",
                    "dicom_study",
                    ",".join(study_uids)[:64],
                    detail={"via": "dimse", "count": len(found)},
                )
            return found

    def _datasets(self, found: list[Instance]) -> Iterator[Dataset]:
        for instance in found:
            data = b"".join(self.store.open_verified(instance.blob_sha256))
            yield pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))

    def _on_get(self, event: Event) -> Iterator[Any]:
        calling: CallingNode = event.assoc.hoichan_node  # type: ignore[attr-defined]
        found = self._instances_for(calling, event.identifier) if calling.may_query else None
        if found is None:
            yield 0
            yield (NOT_AUTHORIZED if not calling.may_query else IDENTIFIER_DOES_NOT_MATCH), None
            return
        yield len(found)
        for dataset in self._datasets(found):
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, dataset

    def _on_move(self, event: Event) -> Iterator[Any]:
        calling: CallingNode = event.assoc.hoichan_node  # type: ignore[attr-defined]
        destination = self._move_destination(calling, event.move_destination)
        if destination is None:
            yield None, None
            return
        found = self._instances_for(calling, event.identifier) if calling.may_query else None
        # The sub-association to the destination proposes exactly the stored SOP classes and syntaxes.
        contexts = [
            build_context(cls, syntax)
            for cls, syntax in sorted({(i.sop_class_uid, i.transfer_syntax_uid) for i in found or []})
        ]
        yield (*destination, {"contexts": contexts[:128] or [build_context(Verification)]})
        if found is None:
            yield 0
            yield (NOT_AUTHORIZED if not calling.may_query else IDENTIFIER_DOES_NOT_MATCH), None
            return
        yield len(found)
        for dataset in self._datasets(found):
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, dataset

    def _move_destination(
        self, calling: CallingNode, destination: bytes | str | None
    ) -> tuple[str, int] | None:
        """Only nodes of the caller's own facility, with an address, are valid destinations."""
        if destination is None:
            return None
        title = destination.decode() if isinstance(destination, bytes) else destination
        with transaction(self.session_factory) as session:
            node = repository.node_by_ae_title(session, title.strip())
            if (
                node is None
                or node.facility_id != calling.principal.facility_id
                or not node.host
                or not node.port
            ):
                return None
            return node.host, node.port


def _calling(node: DicomNode) -> CallingNode:
    return CallingNode(
        principal=nodes.node_principal(node),
        may_store=node.may_store,
        may_query=node.may_query,
        ae_title=node.ae_title,
    )


def _rearm_quickack(event: Event) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        _quickack(sock)


def _quickack(sock: socket.socket) -> None:
    """Answer each PDU's ACK at once: stock storescu's split writes otherwise wait for delayed ACKs."""
    if hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _query_from_identifier(
    level: qido.Level, identifier: Dataset, *, matching_only: bool = False
) -> qido.QidoQuery:
    params: dict[str, list[str]] = {"limit": [str(qido.MAX_LIMIT * 10)]}
    for element in identifier:
        keyword = element.keyword
        if keyword in qido.KEYS and element.value not in (None, "", []):
            value = element.value
            if isinstance(value, pydicom.multival.MultiValue):
                value = "\\".join(str(v) for v in value)
            params[keyword] = [str(value)]
    query = qido.parse_query(level, params)
    query.limit = qido.MAX_LIMIT * 10
    return query


def _find(
    session: Session, store: BlobStore, principal: Principal, level: qido.Level, identifier: Dataset
) -> list[Dataset]:
    query = _query_from_identifier(level, identifier)
    rows = qido.run_query(session, principal, query)
    urls_base = ""
    results: list[Dataset] = []
    for row in rows:
        if level is qido.Level.study:
            data = qido.study_json(row, urls_base)
        elif level is qido.Level.series:
            data = qido.series_json(row, urls_base)
        else:
            data = qido.instance_json(row, urls_base)
            header = ingest.cached_header(store, row)
            data.update({k: v for k, v in header.items() if k not in data and "BulkDataURI" not in v})
        results.append(_answer(identifier, data))
    audit.record(
        session,
        principal,
        "dicom.search",
        f"dicom_{level.value}",
        None,
        detail={"via": "dimse", "keys": sorted(query.filters), "results": len(results)},
    )
    return results


def _answer(identifier: Dataset, data: dict[str, Any]) -> Dataset:
    """Only the keys the requester asked for, filled from our attributes (PS3.4 C.4.1.1.3.2)."""
    full = Dataset.from_json({k: v for k, v in data.items() if "BulkDataURI" not in v})
    answer = Dataset()
    for element in identifier:
        if element.tag in full:
            answer[element.tag] = full[element.tag]
        else:
            answer.add_new(element.tag, element.VR, None)
    answer.QueryRetrieveLevel = identifier.QueryRetrieveLevel
    return answer
