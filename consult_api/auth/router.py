from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from consult_api.auth import service
from consult_api.auth.security import issue_access_token
from consult_api.deps import SessionDep, SettingsDep
from consult_api.errors import Unauthenticated

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type name
    expires_in: int


@router.post(
    "/token",
    summary="OAuth2 password flow: exchange a username and password for a bearer token",
    description="Failed sign-ins are throttled per username and per client address: "
    "429 with Retry-After once HOICHAN_LOGIN_MAX_FAILURES is reached within the window.",
)
def issue_token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> TokenResponse:
    try:
        user = service.authenticate(
            session,
            form.username,
            form.password,
            client=request.client.host if request.client else None,
            throttle=settings.login_throttle,
        )
    except Unauthenticated:
        session.commit()  # the failure counts even though the request fails
        raise
    token, lifetime = issue_access_token(
        user.id,
        key=settings.signing_key,
        algorithm=settings.jwt_algorithm,
        minutes=settings.access_token_minutes,
    )
    return TokenResponse(access_token=token, expires_in=lifetime)
