from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from consult_api.deps import CurrentPrincipal, SessionDep
from consult_api.facilities import service
from consult_api.facilities.models import Facility, Tier
from consult_api.facilities.schemas import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyRead,
    FacilityCreate,
    FacilityRead,
    FacilityUpdate,
    ReferralTargets,
)

router = APIRouter(prefix="/facilities", tags=["facilities"])


def _read(facility: Facility) -> FacilityRead:
    return FacilityRead(
        id=facility.id,
        code=facility.code,
        name=facility.name,
        tier=facility.tier,
        province=facility.province,
        active=facility.active,
        created_at=facility.created_at,
        refers_to=[f.id for f in facility.refers_to],
    )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Register a facility (admin)")
def create_facility(data: FacilityCreate, principal: CurrentPrincipal, session: SessionDep) -> FacilityRead:
    return _read(service.create_facility(session, principal, data))


@router.get("", summary="The facility directory")
def list_facilities(
    _principal: CurrentPrincipal,
    session: SessionDep,
    tier: Tier | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[FacilityRead]:
    return [_read(f) for f in service.list_facilities(session, tier, limit, offset)]


@router.get("/{facility_id}", summary="One facility")
def get_facility(facility_id: str, _principal: CurrentPrincipal, session: SessionDep) -> FacilityRead:
    return _read(service.get_facility(session, facility_id))


@router.patch("/{facility_id}", summary="Change a facility (its administrators)")
def update_facility(
    facility_id: str, data: FacilityUpdate, principal: CurrentPrincipal, session: SessionDep
) -> FacilityRead:
    return _read(service.update_facility(session, principal, facility_id, data))


@router.put("/{facility_id}/referrals", summary="Set the facilities this one may refer cases to (admin)")
def set_referrals(
    facility_id: str, data: ReferralTargets, principal: CurrentPrincipal, session: SessionDep
) -> FacilityRead:
    return _read(service.set_referral_targets(session, principal, facility_id, data.facility_ids))


@router.post(
    "/{facility_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    summary="Issue an upload-gateway API key; the secret is shown only in this response",
)
def issue_api_key(
    facility_id: str, data: ApiKeyCreate, principal: CurrentPrincipal, session: SessionDep
) -> ApiKeyIssued:
    key, secret = service.issue_api_key(session, principal, facility_id, data.name)
    return ApiKeyIssued(**ApiKeyRead.model_validate(key).model_dump(), key=secret)


@router.get("/{facility_id}/api-keys", summary="The facility's API keys (without secrets)")
def list_api_keys(facility_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[ApiKeyRead]:
    return [ApiKeyRead.model_validate(k) for k in service.list_api_keys(session, principal, facility_id)]


@router.delete("/{facility_id}/api-keys/{key_id}", summary="Revoke an API key")
def revoke_api_key(
    facility_id: str, key_id: str, principal: CurrentPrincipal, session: SessionDep
) -> ApiKeyRead:
    return ApiKeyRead.model_validate(service.revoke_api_key(session, principal, facility_id, key_id))
