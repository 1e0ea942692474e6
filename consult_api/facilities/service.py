"""Rules for the referral network and for facilities' upload-gateway API keys."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.auth.security import generate_api_key
from consult_api.db import utcnow
from consult_api.errors import Conflict, InvalidInput, NotPermitted, ResourceNotFound
from consult_api.facilities import repository
from consult_api.facilities.models import Facility, Tier
from consult_api.facilities.schemas import FacilityCreate, FacilityUpdate
from consult_api.users import repository as users
from consult_api.users.models import ApiKey

TIER_RANK = {Tier.central: 0, Tier.provincial: 1, Tier.district: 2, Tier.commune: 3}


def _require_admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise NotPermitted(f"only an administrator may {what}")


def get_facility(session: Session, facility_id: str) -> Facility:
    facility = repository.get(session, facility_id)
    if facility is None:
        raise ResourceNotFound("facility", facility_id)
    return facility


def list_facilities(session: Session, tier: Tier | None, limit: int, offset: int) -> Sequence[Facility]:
    """The network directory is visible to every signed-in user: referrers must pick a target."""
    return repository.list_facilities(session, tier, limit, offset)


def create_facility(session: Session, principal: Principal, data: FacilityCreate) -> Facility:
    _require_admin(principal, "register facilities")
    if repository.by_code(session, data.code) is not None:
        raise Conflict(f"facility code {data.code!r} is taken")
    facility = Facility(code=data.code, name=data.name, tier=data.tier, province=data.province)
    repository.add(session, facility)
    audit.record(session, principal, "facility.create", "facility", facility.id)
    return facility


def update_facility(
    session: Session, principal: Principal, facility_id: str, data: FacilityUpdate
) -> Facility:
    facility = get_facility(session, facility_id)
    if not principal.manages_facility(facility_id):
        raise NotPermitted("only the facility's administrators may change it")
    changes = data.model_dump(exclude_unset=True)
    if "active" in changes:
        _require_admin(principal, "activate or deactivate facilities")
    for field, value in changes.items():
        setattr(facility, field, value)
    session.flush()
    audit.record(
        session, principal, "facility.update", "facility", facility.id, detail={"fields": sorted(changes)}
    )
    return facility


def check_referral_target(source: Facility, target: Facility) -> None:
    """Referrals go to the same tier or upward, never to oneself or to an inactive facility."""
    if target.id == source.id:
        raise InvalidInput("a facility cannot refer to itself")
    if not target.active:
        raise InvalidInput(f"facility {target.code} is not active")
    if TIER_RANK[target.tier] > TIER_RANK[source.tier]:
        raise InvalidInput(
            f"{source.code} ({source.tier}) cannot refer to the lower-tier {target.code} ({target.tier})"
        )


def set_referral_targets(
    session: Session, principal: Principal, facility_id: str, target_ids: Sequence[str]
) -> Facility:
    _require_admin(principal, "change referral links")
    source = get_facility(session, facility_id)
    unique_ids = list(dict.fromkeys(target_ids))
    targets = list(repository.get_many(session, unique_ids))
    missing = sorted(set(unique_ids) - {t.id for t in targets})
    if missing:
        raise InvalidInput(f"unknown facilities: {', '.join(missing)}")
    for target in targets:
        check_referral_target(source, target)
    source.refers_to = sorted(targets, key=lambda f: f.code)
    session.flush()
    audit.record(
        session,
        principal,
        "facility.referrals",
        "facility",
        source.id,
        detail={"targets": sorted(unique_ids)},
    )
    return source


def _require_manager(session: Session, principal: Principal, facility_id: str) -> Facility:
    facility = get_facility(session, facility_id)
    if not principal.manages_facility(facility_id):
        raise NotPermitted("only the facility's administrators may manage its API keys")
    return facility


def issue_api_key(session: Session, principal: Principal, facility_id: str, name: str) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored nor shown again."""
    _require_manager(session, principal, facility_id)
    new = generate_api_key()
    key = ApiKey(
        facility_id=facility_id,
        name=name,
        prefix=new.prefix,
        secret_hash=new.secret_hash,
        created_by_id=principal.id if principal.is_user else None,
    )
    users.add(session, key)
    audit.record(session, principal, "api_key.create", "api_key", key.id)
    return key, new.secret


def list_api_keys(session: Session, principal: Principal, facility_id: str) -> Sequence[ApiKey]:
    _require_manager(session, principal, facility_id)
    return users.api_keys_of(session, facility_id)


def revoke_api_key(session: Session, principal: Principal, facility_id: str, key_id: str) -> ApiKey:
    _require_manager(session, principal, facility_id)
    key = session.get(ApiKey, key_id)
    if key is None or key.facility_id != facility_id:
        raise ResourceNotFound("api key", key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
        audit.record(session, principal, "api_key.revoke", "api_key", key.id)
    return key
