"""Rules for managing users: who may create whom, with which roles; revocation on change."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.audit import service as audit
from consult_api.auth.security import hash_password, verify_password
from consult_api.db import utcnow
from consult_api.errors import Conflict, InvalidInput, NotPermitted, ResourceNotFound
from consult_api.facilities import repository as facilities
from consult_api.users import repository
from consult_api.users.models import User
from consult_api.users.schemas import PasswordChange, UserCreate, UserUpdate


def _check_may_grant(principal: Principal, roles: Sequence[Role]) -> None:
    if Role.admin in roles and not principal.is_admin:
        raise NotPermitted("only an administrator may grant the admin role")


def _visible(principal: Principal, user: User) -> bool:
    return user.id == principal.id or principal.manages_facility(user.facility_id)


def create_user(session: Session, principal: Principal, data: UserCreate) -> User:
    if not principal.manages_facility(data.facility_id):
        raise NotPermitted("only the facility's administrators may add users to it")
    if facilities.get(session, data.facility_id) is None:
        raise InvalidInput(f"facility {data.facility_id} does not exist")
    _check_may_grant(principal, data.roles)
    if repository.by_username(session, data.username) is not None:
        raise Conflict(f"username {data.username!r} is taken")
    user = User(
        username=data.username,
        full_name=data.full_name,
        email=data.email,
        password_hash=hash_password(data.password),
        facility_id=data.facility_id,
        roles=sorted({r.value for r in data.roles}),
        on_duty=data.on_duty,
    )
    repository.add(session, user)
    audit.record(session, principal, "user.create", "user", user.id, detail={"roles": user.roles})
    return user


def get_user(session: Session, principal: Principal, user_id: str) -> User:
    user = repository.get(session, user_id)
    if user is None or not _visible(principal, user):
        raise ResourceNotFound("user", user_id)
    return user


def list_users(
    session: Session, principal: Principal, facility_id: str | None, limit: int, offset: int
) -> Sequence[User]:
    if principal.is_admin:
        return repository.list_users(session, facility_id, limit, offset)
    if Role.facility_admin in principal.roles:
        if facility_id not in (None, principal.facility_id):
            return []
        return repository.list_users(session, principal.facility_id, limit, offset)
    me = repository.get(session, principal.id)
    return [me] if me is not None and facility_id in (None, me.facility_id) else []


def update_user(session: Session, principal: Principal, user_id: str, data: UserUpdate) -> User:
    user = get_user(session, principal, user_id)
    if not principal.manages_facility(user.facility_id):
        raise NotPermitted("only the facility's administrators may change its users")
    if Role.admin.value in user.roles and not principal.is_admin:
        raise NotPermitted("only an administrator may change an administrator's account")
    changes = data.model_dump(exclude_unset=True)
    if data.roles is not None:
        _check_may_grant(principal, data.roles)
        user.roles = sorted({r.value for r in data.roles})
    for field in ("full_name", "email", "on_duty"):
        if field in changes:
            setattr(user, field, changes[field])
    if data.is_active is not None:
        if user.id == principal.id and not data.is_active:
            raise Conflict("you cannot deactivate your own account")
        user.is_active = data.is_active
    if data.password is not None:
        user.password_hash = hash_password(data.password)
    if data.is_active is False or data.password is not None or data.roles is not None:
        user.tokens_valid_after = utcnow()
    session.flush()
    audit.record(session, principal, "user.update", "user", user.id, detail={"fields": sorted(changes)})
    return user


def change_own_password(session: Session, principal: Principal, data: PasswordChange) -> None:
    user = repository.get(session, principal.id)
    if user is None or not verify_password(user.password_hash, data.current_password):
        raise NotPermitted("current password is wrong")
    user.password_hash = hash_password(data.new_password)
    user.tokens_valid_after = utcnow()
    session.flush()
    audit.record(session, principal, "user.password_change", "user", user.id)
