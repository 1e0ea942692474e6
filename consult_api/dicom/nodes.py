"""DICOM nodes: a facility's AE titles, who may store, who may query, and C-MOVE destinations."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.audit import service as audit
from consult_api.dicom import repository
from consult_api.dicom.models import DicomNode
from consult_api.errors import Conflict, NotPermitted, ResourceNotFound
from consult_api.facilities import repository as facilities

QUERY_ROLES = frozenset({Role.referrer, Role.radiologist, Role.pathologist, Role.surgeon})


def node_principal(node: DicomNode) -> Principal:
    """A node acts for its facility: storing as a referrer; querying also as that facility's readers."""
    roles = QUERY_ROLES if node.may_query else frozenset({Role.referrer})
    return Principal(
        kind="dicom_node", id=node.id, facility_id=node.facility_id, roles=roles, name=node.ae_title
    )


def _require_manager(session: Session, principal: Principal, facility_id: str) -> None:
    if facilities.get(session, facility_id) is None:
        raise ResourceNotFound("facility", facility_id)
    if not principal.manages_facility(facility_id):
        raise NotPermitted("only the facility's administrators manage its DICOM nodes")


def list_nodes(session: Session, principal: Principal, facility_id: str) -> Sequence[DicomNode]:
    _require_manager(session, principal, facility_id)
    return repository.nodes_of(session, facility_id)


def add_node(
    session: Session,
    principal: Principal,
    facility_id: str,
    *,
    ae_title: str,
    host: str | None,
    port: int | None,
    may_store: bool,
    may_query: bool,
) -> DicomNode:
    _require_manager(session, principal, facility_id)
    if repository.node_by_ae_title(session, ae_title) is not None:
        raise Conflict(f"AE title {ae_title!r} is already registered")
    node = DicomNode(
        ae_title=ae_title,
        facility_id=facility_id,
        host=host,
        port=port,
        may_store=may_store,
        may_query=may_query,
    )
    repository.add(session, node)
    audit.record(
        session, principal, "dicom_node.create", "dicom_node", node.id, detail={"ae_title": ae_title}
    )
    return node


def remove_node(session: Session, principal: Principal, facility_id: str, node_id: str) -> None:
    _require_manager(session, principal, facility_id)
    node = session.get(DicomNode, node_id)
    if node is None or node.facility_id != facility_id:
        raise ResourceNotFound("DICOM node", node_id)
    session.delete(node)
    session.flush()
    audit.record(session, principal, "dicom_node.delete", "dicom_node", node_id)
