"""FHIR R4 export of a concluded case, for the referring hospital's information system."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from consult_api.deps import CurrentPrincipal, SessionDep
from consult_api.fhir import service

router = APIRouter(tags=["fhir"])
FHIR_JSON = "application/fhir+json"


@router.get(
    "/cases/{case_id}/fhir",
    summary="FHIR R4 Bundle of a concluded case (DiagnosticReport, Observations, ImagingStudy)",
    response_class=JSONResponse,
    responses={200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}}},
)
def export_fhir(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> Any:
    # A plain JSONResponse: the bundle is already JSON-ready, and FHIR clients expect fhir+json.
    bundle = service.export_case(session, principal, case_id)
    return JSONResponse(bundle, media_type=FHIR_JSON)
