"""Request-scoped dependencies as ``Annotated`` aliases: permissions read as types in signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.auth import service as auth
from consult_api.config import Settings
from consult_api.errors import Unauthenticated
from consult_api.storage.blobs import BlobStore

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105 - a route, not a secret
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="A facility's upload-gateway key."
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, rolled back on error."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_blob_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.blob_store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]


def get_principal(
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Security(oauth2_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> Principal:
    if token:
        return auth.principal_from_token(
            session, token, key=settings.signing_key, algorithm=settings.jwt_algorithm
        )
    if api_key:
        return auth.principal_from_api_key(session, api_key)
    raise Unauthenticated("sign in with a bearer token or send a facility API key")


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
