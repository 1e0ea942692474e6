"""REST routes around DICOM under /api/v1: a case's studies, browser uploads to a case, and facilities'
DICOM nodes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile, status
from pydantic import Field, StringConstraints

from consult_api.deps import BlobStoreDep, CurrentPrincipal, SessionDep, SettingsDep
from consult_api.dicom import nodes, service, upload
from consult_api.dicom.archive import ZipLimits
from consult_api.schemas import Output, StrictInput

router = APIRouter(tags=["dicom"])
AeTitle = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16, pattern=r"^[ -~]+$")
]


class DicomNodeIn(StrictInput):
    ae_title: AeTitle
    host: Annotated[str, StringConstraints(max_length=255)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    may_store: bool = True
    may_query: bool = False


class DicomNodeRead(Output):
    id: str
    ae_title: str
    facility_id: str
    host: str | None
    port: int | None
    may_store: bool
    may_query: bool


class UploadedInstance(Output):
    filename: str
    sop_instance_uid: str
    study_instance_uid: str
    stored: bool
    duplicate: bool
    failure_reason: int | None
    message: str


class UploadReport(Output):
    stored: int
    duplicates: int
    failed: int
    instances: list[UploadedInstance]


class CaseSeriesRead(Output):
    series_instance_uid: str
    series_number: int | None
    modality: str
    series_description: str
    body_part_examined: str
    number_of_instances: int


class CaseStudyRead(Output):
    study_instance_uid: str
    study_date: str
    study_time: str
    study_description: str
    accession_number: str
    modalities: list[str]
    number_of_series: int
    number_of_instances: int
    series: list[CaseSeriesRead]


@router.get("/cases/{case_id}/studies", summary="The DICOM studies attached to a case, with their series")
def case_studies(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[CaseStudyRead]:
    """Studies linked to the case (not matched by patient id), each with its series list."""
    return [
        CaseStudyRead(
            study_instance_uid=item.study.study_instance_uid,
            study_date=item.study.study_date,
            study_time=item.study.study_time,
            study_description=item.study.study_description,
            accession_number=item.study.accession_number,
            modalities=list(item.study.modalities or []),
            number_of_series=len(item.series),
            number_of_instances=sum(s.number_of_instances for s in item.series),
            series=[CaseSeriesRead.model_validate(s) for s in item.series],
        )
        for item in service.case_studies(session, principal, case_id)
    ]


@router.post(
    "/cases/{case_id}/dicom",
    status_code=status.HTTP_201_CREATED,
    summary="Upload DICOM files or zip archives from a browser and attach them to the case",
)
def upload_dicom(
    case_id: str,
    files: Annotated[list[UploadFile], File(description="Part-10 files and/or .zip archives")],
    principal: CurrentPrincipal,
    session: SessionDep,
    store: BlobStoreDep,
    settings: SettingsDep,
) -> UploadReport:
    limits = ZipLimits(settings.max_zip_entries, settings.max_zip_total_bytes, settings.max_zip_ratio)
    items: list[tuple[str, Any]] = [(f.filename or "upload", f.file) for f in files]
    results = upload.upload_to_case(session, principal, store, case_id, items, limits)
    instances = [
        UploadedInstance(
            filename=name,
            sop_instance_uid=o.sop_instance_uid,
            study_instance_uid=o.study_instance_uid,
            stored=o.ok and not o.duplicate,
            duplicate=o.duplicate,
            failure_reason=o.failure_reason,
            message=o.message,
        )
        for name, o in results
    ]
    return UploadReport(
        stored=sum(i.stored for i in instances),
        duplicates=sum(i.duplicate for i in instances),
        failed=sum(i.failure_reason is not None for i in instances),
        instances=instances,
    )


@router.get("/facilities/{facility_id}/dicom-nodes", summary="The facility's DICOM application entities")
def list_nodes(facility_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[DicomNodeRead]:
    return [DicomNodeRead.model_validate(n) for n in nodes.list_nodes(session, principal, facility_id)]


@router.post(
    "/facilities/{facility_id}/dicom-nodes",
    status_code=status.HTTP_201_CREATED,
    summary="Register an AE title: may it C-STORE to us, may it query/retrieve, where C-MOVE sends",
)
def add_node(
    facility_id: str, data: DicomNodeIn, principal: CurrentPrincipal, session: SessionDep
) -> DicomNodeRead:
    node = nodes.add_node(session, principal, facility_id, **data.model_dump())
    return DicomNodeRead.model_validate(node)


@router.delete(
    "/facilities/{facility_id}/dicom-nodes/{node_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an AE title; its associations are refused from then on",
)
def remove_node(facility_id: str, node_id: str, principal: CurrentPrincipal, session: SessionDep) -> None:
    nodes.remove_node(session, principal, facility_id, node_id)
