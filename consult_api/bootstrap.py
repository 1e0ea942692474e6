"""First run: a network-operations facility and an administrator, so a fresh install can be used."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from consult_api.access import Role
from consult_api.audit import service as audit
from consult_api.auth.security import hash_password
from consult_api.errors import Conflict, InvalidInput
from consult_api.facilities import repository as facilities
from consult_api.facilities.models import Facility, Tier
from consult_api.users import repository as users
from consult_api.users.models import User

OPERATIONS_FACILITY_CODE = "HOICHAN-OPS"
PASSWORD_FILE = "bootstrap-admin-password"  # noqa: S105 - a file name
MIN_PASSWORD = 12


@dataclass(frozen=True)
class BootstrapResult:
    created: bool
    username: str | None = None
    password_file: Path | None = None


def operations_facility(session: Session) -> Facility:
    facility = facilities.by_code(session, OPERATIONS_FACILITY_CODE)
    if facility is None:
        facility = Facility(
            code=OPERATIONS_FACILITY_CODE, name="Hoichan network operations", tier=Tier.central
        )
        facilities.add(session, facility)
        audit.record(session, None, "facility.create", "facility", facility.id)
    return facility


def create_admin(session: Session, username: str, password: str, facility_code: str | None = None) -> User:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"passwords need at least {MIN_PASSWORD} characters")
    if users.by_username(session, username) is not None:
        raise Conflict(f"username {username!r} is taken")
    if facility_code:
        facility = facilities.by_code(session, facility_code)
        if facility is None:
            raise InvalidInput(f"no facility with code {facility_code!r}")
    else:
        facility = operations_facility(session)
    user = User(
        username=username,
        full_name="Administrator",
        password_hash=hash_password(password),
        facility_id=facility.id,
        roles=[Role.admin.value],
    )
    users.add(session, user)
    audit.record(session, None, "user.create", "user", user.id, detail={"roles": user.roles})
    return user


def bootstrap(session: Session, data_dir: Path, username: str, password: str | None) -> BootstrapResult:
    """Create the first administrator when there are no users; keep a generated password in a 0600 file."""
    if users.count(session) > 0:
        return BootstrapResult(created=False)
    password_file: Path | None = None
    if password is None:
        password = secrets.token_urlsafe(18)
        password_file = data_dir / PASSWORD_FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n")
    create_admin(session, username, password)
    return BootstrapResult(created=True, username=username, password_file=password_file)
