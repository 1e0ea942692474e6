"""DICOMweb rules over the index: store, search, retrieve; every read and write audited."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.cases import service as cases
from consult_api.dicom import ingest, parsing, pixels, qido, repository
from consult_api.dicom.ingest import IngestContext, StoreOutcome
from consult_api.dicom.models import Instance, Series, Study
from consult_api.dicom.multipart import ReceivedPart
from consult_api.errors import ResourceNotFound
from consult_api.storage.blobs import BlobStore


@dataclass(frozen=True)
class CaseStudy:
    """A study attached to a case, with its series (in series number order)."""

    study: Study
    series: list[Series]


def case_studies(session: Session, principal: Principal, case_id: str) -> list[CaseStudy]:
    """The DICOM studies of a case the caller can see (404 otherwise); the read is audited.

    Found by the study's case link, never by patient id: two facilities may share a patient id string.
    """
    case = cases.get_case(session, principal, case_id, audit_read=False)
    studies = repository.studies_of_case(session, case.id)
    by_study: dict[str, list[Series]] = {s.id: [] for s in studies}
    for series in repository.series_of_studies(session, list(by_study)):
        by_study[series.study_id].append(series)
    audit.record(
        session,
        principal,
        "dicom.case_studies",
        "case",
        case.id,
        case_id=case.id,
        detail={"study_instance_uids": [s.study_instance_uid for s in studies]},
    )
    return [CaseStudy(study, by_study[study.id]) for study in studies]


@dataclass(frozen=True)
class Urls:
    """Builds RetrieveURLs and BulkDataURIs from the request's own base URL."""

    base: str  # e.g. http://host:8000/dicom-web

    def study(self, study_uid: str) -> str:
        return f"{self.base}/studies/{study_uid}"

    def series(self, study_uid: str, series_uid: str) -> str:
        return f"{self.study(study_uid)}/series/{series_uid}"

    def instance(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        return f"{self.series(study_uid, series_uid)}/instances/{sop_uid}"


def stow(
    session: Session,
    principal: Principal,
    store: BlobStore,
    parts: Sequence[ReceivedPart],
    *,
    case_id: str | None,
    expected_study_uid: str | None,
) -> IngestContext:
    case = ingest.case_for_upload(session, principal, case_id) if case_id else None
    ctx = IngestContext(
        principal=principal, via="stow", case=case, expected_study_uid=expected_study_uid, defer_dir_sync=True
    )
    refused = [
        StoreOutcome("", "", failure_reason=parsing.CANNOT_UNDERSTAND, message=part.refusal or "")
        for part in parts
        if part.staged is None
    ]
    # Parts the receiver could parse while the body arrived go in parsed; the others are parsed now.
    staged = [
        part.staged if part.parsed is None else (part.staged, part.parsed)
        for part in parts
        if part.staged is not None
    ]
    ingest.store_parsed(session, store, ctx, staged)
    ctx.outcomes.extend(refused)
    # Data and renames durable before the index commits: rows never point at lost blobs. One sync of
    # the store's filesystem costs less than a file and a folder fsync per instance; then the parts'
    # pages leave the page cache, for the next request to write into (see ``sync_all``).
    store.sync_all(written=[part.staged.ref for part in parts if part.staged is not None])
    ingest.finish(session, ctx, audit.record)
    return ctx


def stow_response(ctx: IngestContext, urls: Urls) -> tuple[int, dict[str, Any]]:
    """PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored."""
    referenced, failed = [], []
    for outcome in ctx.outcomes:
        item: dict[str, Any] = {
            "00081150": qido.element("ReferencedSOPClassUID", outcome.sop_class_uid),
            "00081155": qido.element("ReferencedSOPInstanceUID", outcome.sop_instance_uid),
        }
        if outcome.ok:
            item["00081190"] = qido.element(
                "RetrieveURL",
                urls.instance(
                    outcome.study_instance_uid, outcome.series_instance_uid, outcome.sop_instance_uid
                ),
            )
            referenced.append(item)
        else:
            item["00081197"] = qido.element("FailureReason", outcome.failure_reason)
            item["00741048"] = {"vr": "LT", "Value": [outcome.message]}  # a human-readable reason
            failed.append(item)
    body: dict[str, Any] = {}
    if ctx.expected_study_uid:
        body["00081190"] = qido.element("RetrieveURL", urls.study(ctx.expected_study_uid))
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    return status, body


def search(
    session: Session,
    principal: Principal,
    store: BlobStore,
    level: qido.Level,
    params: Mapping[str, Sequence[str]],
    urls: Urls,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    query = qido.parse_query(level, params)
    rows = qido.run_query(session, principal, query, study_uid=study_uid, series_uid=series_uid)
    results = [_result_json(session, store, row, query, urls) for row in rows]
    audit.record(
        session,
        principal,
        "dicom.search",
        f"dicom_{level.value}",
        study_uid,
        detail={"keys": sorted(query.filters), "results": len(results)},
    )
    return results, query.ignored


def _result_json(
    session: Session, store: BlobStore, row: Any, query: qido.QidoQuery, urls: Urls
) -> dict[str, Any]:
    wants_header = bool(query.include or query.include_all)
    if isinstance(row, Study):
        result = qido.study_json(row, urls.study(row.study_instance_uid))
        first = _first_instance(session, Series.study_id == row.id) if wants_header else None
    elif isinstance(row, Series):
        result = qido.series_json(row, urls.series(row.study.study_instance_uid, row.series_instance_uid))
        first = _first_instance(session, Instance.series_id == row.id) if wants_header else None
    else:
        first = row if wants_header else None
        url = urls.instance(_study_uid(row), row.series.series_instance_uid, row.sop_instance_uid)
        result = qido.instance_json(row, url)
    if first is None:
        return result
    return qido.include_from_header(result, ingest.cached_header(store, first), query)


def _study_uid(instance: Instance) -> str:
    return instance.series.study.study_instance_uid


def _first_instance(session: Session, condition: Any) -> Instance | None:
    """A representative instance whose header answers ``includefield`` at study or series level."""
    query = select(Instance).join(Series, Instance.series_id == Series.id).where(condition)
    return session.scalars(query.order_by(Instance.instance_number, Instance.id).limit(1)).first()


def instances(
    session: Session,
    principal: Principal,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    *,
    action: str,
) -> Sequence[Instance]:
    """Visible instances at one level, or 404 (also when they exist but are not visible)."""
    found = repository.instances_of(session, principal, study_uid, series_uid, sop_uid)
    if not found:
        raise ResourceNotFound("DICOM resource", sop_uid or series_uid or study_uid)
    study = found[0].series.study
    audit.record(
        session,
        principal,
        action,
        "dicom_study",
        study_uid,
        case_id=study.case_id,
        detail={"series": series_uid, "instance": sop_uid, "count": len(found)},
    )
    return found


def instance_stream(store: BlobStore, found: Sequence[Instance]) -> Iterator[Iterator[bytes]]:
    for instance in found:
        yield store.open_verified(instance.blob_sha256)


def metadata(store: BlobStore, found: Sequence[Instance], urls: Urls) -> list[dict[str, Any]]:
    """DICOM JSON of each header with BulkDataURIs pointing back at this server."""
    return [_instance_metadata(store, instance, urls) for instance in found]


def _instance_metadata(store: BlobStore, instance: Instance, urls: Urls) -> dict[str, Any]:
    url = urls.instance(_study_uid(instance), instance.series.series_instance_uid, instance.sop_instance_uid)
    header = ingest.cached_header(store, instance)
    result = {tag: _resolve_bulk(value, url) for tag, value in header.items()}
    result["00020010"] = {"vr": "UI", "Value": [instance.transfer_syntax_uid]}
    if instance.rows:
        result["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    return dict(sorted(result.items()))


def _resolve_bulk(value: Any, instance_url: str) -> Any:
    if isinstance(value, dict):
        uri = value.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith(ingest.BULKDATA_MARKER):
            return {**value, "BulkDataURI": f"{instance_url}/bulkdata/{uri[len(ingest.BULKDATA_MARKER) :]}"}
        return {k: _resolve_bulk(v, instance_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_bulk(v, instance_url) for v in value]
    return value


def load_dataset(store: BlobStore, instance: Instance) -> Dataset:
    data = b"".join(store.open_verified(instance.blob_sha256))
    return pixels.read_dataset(data)


def bulkdata(store: BlobStore, instance: Instance, tag_hex: str) -> bytes:
    try:
        tag = int(tag_hex, 16)
    except ValueError as exc:
        raise ResourceNotFound("bulk data", tag_hex) from exc
    ds = load_dataset(store, instance)
    if tag not in ds:
        raise ResourceNotFound("bulk data", tag_hex)
    value = ds[tag].value
    if not isinstance(value, bytes):
        raise ResourceNotFound("bulk data", tag_hex)
    return value
