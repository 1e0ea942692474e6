from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from consult_api.deps import CurrentPrincipal, SessionDep
from consult_api.errors import NotPermitted
from consult_api.users import service
from consult_api.users.models import User
from consult_api.users.schemas import PasswordChange, UserCreate, UserRead, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])


def _read(user: User) -> UserRead:
    return UserRead.model_validate(user)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a user in a facility")
def create_user(data: UserCreate, principal: CurrentPrincipal, session: SessionDep) -> UserRead:
    return _read(service.create_user(session, principal, data))


@router.get(
    "", summary="Users the caller may see: all (admin), their facility's (facility admin), or themselves"
)
def list_users(
    principal: CurrentPrincipal,
    session: SessionDep,
    facility_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[UserRead]:
    return [_read(u) for u in service.list_users(session, principal, facility_id, limit, offset)]


@router.get("/me", summary="The signed-in user")
def me(principal: CurrentPrincipal, session: SessionDep) -> UserRead:
    if not principal.is_user:
        raise NotPermitted("an API key is not a user")
    return _read(service.get_user(session, principal, principal.id))


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change one's own password")
def change_password(data: PasswordChange, principal: CurrentPrincipal, session: SessionDep) -> None:
    service.change_own_password(session, principal, data)


@router.get("/{user_id}", summary="One user")
def get_user(user_id: str, principal: CurrentPrincipal, session: SessionDep) -> UserRead:
    return _read(service.get_user(session, principal, user_id))


@router.patch("/{user_id}", summary="Change a user's details, roles, password or active flag")
def update_user(user_id: str, data: UserUpdate, principal: CurrentPrincipal, session: SessionDep) -> UserRead:
    return _read(service.update_user(session, principal, user_id, data))
