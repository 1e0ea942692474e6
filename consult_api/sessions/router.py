"""HTTP and WebSocket doors of review sessions; rules live in ``service``, relaying in ``signaling``."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request, WebSocket, WebSocketDisconnect, status
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from consult_api.config import Settings
from consult_api.db import transaction, utcnow
from consult_api.deps import CurrentPrincipal, SessionDep, SettingsDep
from consult_api.errors import Conflict, HoichanError, NotPermitted, ResourceNotFound, Unauthenticated
from consult_api.sessions import service
from consult_api.sessions.errors import RoomFull
from consult_api.sessions.ice import IceConfig, ice_servers
from consult_api.sessions.providers import MediaProvider
from consult_api.sessions.schemas import InviteIn, JoinIn, JoinRead, SessionCreate, SessionRead
from consult_api.sessions.signaling import Close, Peer, SignalingHub
from consult_api.sessions.tokens import JoinTokens

log = logging.getLogger(__name__)
router = APIRouter(tags=["sessions"])
HELLO_SECONDS = 10.0
MAX_MESSAGE_CHARS = 64 * 1024
TURN_CREDENTIAL_TTL = timedelta(hours=12)
ASSETS = {"session.js": "text/javascript", "session.css": "text/css"}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "media-src 'self' blob: mediastream:; img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CLOSE_CODES: list[tuple[type[HoichanError], int]] = [
    (RoomFull, 4429),
    (Unauthenticated, 4401),
    (NotPermitted, 4403),
    (ResourceNotFound, 4404),
    (Conflict, 4409),
]


def get_provider(request: Request) -> MediaProvider:
    provider: MediaProvider = request.app.state.media_provider
    return provider


def get_hub(request: Request) -> SignalingHub:
    hub: SignalingHub = request.app.state.signaling_hub
    return hub


def join_tokens(settings: Settings) -> JoinTokens:
    return JoinTokens(settings.signing_key, settings.jwt_algorithm, settings.session_join_token_minutes)


def ice_config(settings: Settings) -> IceConfig:
    return IceConfig(
        stun_urls=tuple(settings.stun_urls),
        turn_urls=tuple(settings.turn_urls),
        turn_username=settings.turn_username,
        turn_password=settings.turn_password.get_secret_value() if settings.turn_password else None,
        turn_shared_secret=(
            settings.turn_shared_secret.get_secret_value() if settings.turn_shared_secret else None
        ),
    )


ProviderDep = Annotated[MediaProvider, Depends(get_provider)]
HubDep = Annotated[SignalingHub, Depends(get_hub)]


@router.post(
    "/cases/{case_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    summary="Open a video session on a case now, or schedule it",
)
def create_session(
    case_id: str, data: SessionCreate, principal: CurrentPrincipal, session: SessionDep, provider: ProviderDep
) -> SessionRead:
    return SessionRead.model_validate(service.create_session(session, principal, provider, case_id, data))


@router.get("/cases/{case_id}/sessions", summary="The case's video sessions")
def list_sessions(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[SessionRead]:
    return [SessionRead.model_validate(r) for r in service.list_sessions(session, principal, case_id)]


@router.get("/sessions/assets/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise ResourceNotFound("asset", name)
    return Response(_static(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


@router.get("/sessions/{session_id}", summary="One video session and its participants")
def get_session(session_id: str, principal: CurrentPrincipal, session: SessionDep) -> SessionRead:
    return SessionRead.model_validate(service.get_session(session, principal, session_id))


@router.post("/sessions/{session_id}/participants", summary="Invite a user who can see the case (hosts)")
def invite(session_id: str, data: InviteIn, principal: CurrentPrincipal, session: SessionDep) -> SessionRead:
    return SessionRead.model_validate(service.invite(session, principal, session_id, data))


@router.post("/sessions/{session_id}/join", summary="Join: a short-lived join token and media details")
def join(
    session_id: str,
    data: JoinIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    provider: ProviderDep,
) -> JoinRead:
    grant = service.join(
        session, principal, provider, join_tokens(settings), session_id, data.recording_consent
    )
    base = f"/api/v1/sessions/{session_id}"
    return JoinRead(
        session_id=session_id,
        provider=grant.review.provider,
        role=grant.role,
        token=grant.token,
        expires_in=grant.expires_in,
        signal_url=f"{base}/signal",
        page_url=f"{base}/page#token={grant.token}",
        ice_servers=ice_servers(ice_config(settings), principal.id, utcnow(), TURN_CREDENTIAL_TTL),
        media=grant.media,
    )


@router.post("/sessions/{session_id}/leave", status_code=status.HTTP_204_NO_CONTENT, summary="Leave")
def leave(session_id: str, principal: CurrentPrincipal, session: SessionDep, provider: ProviderDep) -> None:
    service.leave(session, principal, provider, session_id)


@router.post("/sessions/{session_id}/end", summary="End the session for everyone (hosts)")
def end(
    session_id: str,
    principal: CurrentPrincipal,
    session: SessionDep,
    provider: ProviderDep,
    hub: HubDep,
    background: BackgroundTasks,
) -> SessionRead:
    review = service.end(session, principal, provider, session_id)
    background.add_task(hub.end, session_id)  # after the commit: never kick peers of a rolled-back end
    return SessionRead.model_validate(review)


@router.get("/sessions/{session_id}/page", response_class=HTMLResponse, include_in_schema=False)
def page(session_id: str) -> HTMLResponse:
    """The same static page for every session: it reads its join token from the URL fragment."""
    return HTMLResponse(_static("session.html"), headers=PAGE_HEADERS)


@cache
def _static(name: str) -> str:
    return (resources.files("consult_api.sessions") / "static" / name).read_text(encoding="utf-8")


def _close_code(exc: HoichanError) -> int:
    return next((code for kind, code in CLOSE_CODES if isinstance(exc, kind)), 4400)


class _Connection:
    """One signaling socket: its peer, its current join token, and the app's shared objects."""

    def __init__(self, websocket: WebSocket, session_id: str) -> None:
        state = websocket.app.state
        self.websocket = websocket
        self.session_id = session_id
        self.settings: Settings = state.settings
        self.factory: sessionmaker[Session] = state.session_factory
        self.provider: MediaProvider = state.media_provider
        self.hub: SignalingHub = state.signaling_hub
        self.tokens = join_tokens(self.settings)
        self.token = ""

    def _in_transaction(self, fn: Any, *args: Any) -> Any:
        with transaction(self.factory) as session:
            return fn(session, *args)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a service function in its own transaction, off the event loop."""
        return await run_in_threadpool(self._in_transaction, fn, *args)

    async def hello(self) -> str | None:
        try:
            first = json.loads(await asyncio.wait_for(self.websocket.receive_text(), HELLO_SECONDS))
        except (TimeoutError, WebSocketDisconnect, ValueError):
            return None
        token = first.get("token") if isinstance(first, dict) and first.get("type") == "join" else None
        return token if isinstance(token, str) else None

    async def admit(self) -> Peer:
        admission: service.Admission = await self.call(
            service.admit_connection, self.provider, self.tokens, self.session_id, self.token
        )
        self.token = admission.token
        peer = Peer(admission.user_id, admission.display_name, admission.role)
        max_peers = self.settings.builtin_max_peers if admission.media_over_signaling else None
        ttl = TURN_CREDENTIAL_TTL
        self.hub.attach(
            peer,
            session_id=self.session_id,
            case_id=admission.case_id,
            media=admission.media_over_signaling,
            max_peers=max_peers,
            invited={p["user_id"] for p in admission.roster},
            welcome={
                "participants": admission.roster,
                "token": admission.token,
                "expires_in": admission.expires_in,
                "ice_servers": ice_servers(ice_config(self.settings), peer.user_id, utcnow(), ttl),
            },
        )
        return peer

    async def serve(self, peer: Peer) -> None:
        while True:
            text = await self.websocket.receive_text()
            if len(text) > MAX_MESSAGE_CHARS:
                peer.send(
                    {"type": "error", "detail": f"messages are limited to {MAX_MESSAGE_CHARS} characters"}
                )
                continue
            try:
                message = json.loads(text)
            except ValueError:
                peer.send({"type": "error", "detail": "messages are JSON objects"})
                continue
            if not isinstance(message, dict):
                peer.send({"type": "error", "detail": "messages are JSON objects"})
            elif message.get("type") == "renew":
                await self._renew(peer)
            elif message.get("type") == "leave":
                await self._leave(peer)
                return
            else:
                self.hub.handle(self.session_id, peer, message)

    async def _leave(self, peer: Peer) -> None:
        try:
            await self.call(service.leave_by_token, self.provider, self.tokens, self.session_id, self.token)
        except HoichanError as exc:
            peer.close(_close_code(exc), exc.detail[:120])
            return
        peer.close(1000, "left the session")

    async def _renew(self, peer: Peer) -> None:
        try:
            self.token = await self.call(service.renew_token, self.tokens, self.session_id, self.token)
        except HoichanError as exc:
            peer.close(_close_code(exc), exc.detail[:120])
            return
        peer.send({"type": "token", "token": self.token, "expires_in": self.tokens.lifetime_seconds})


async def _drain(websocket: WebSocket, peer: Peer) -> None:
    """Write the peer's outbox to its socket until the hub asks to close it."""
    while True:
        item = await peer.outbox.get()
        if isinstance(item, Close):
            await websocket.close(code=item.code, reason=item.reason)
            return
        await websocket.send_text(item)


@router.websocket("/sessions/{session_id}/signal")
async def signal(websocket: WebSocket, session_id: str) -> None:
    """Signaling for one session; the first message must be ``{"type": "join", "token": ...}``."""
    await websocket.accept()
    connection = _Connection(websocket, session_id)
    token = await connection.hello()
    if token is None:
        await websocket.close(code=4400, reason='send {"type": "join", "token": ...} first')
        return
    connection.token = token
    try:
        peer = await connection.admit()
    except HoichanError as exc:
        await websocket.close(code=_close_code(exc), reason=exc.detail[:120])
        return
    writer = asyncio.create_task(_drain(websocket, peer))
    try:
        await connection.serve(peer)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        connection.hub.detach(session_id, peer)
        if not writer.done():
            peer.close(1000, "bye")
        try:
            await asyncio.wait_for(writer, timeout=5)
        except Exception:  # noqa: BLE001 - the socket is gone either way
            writer.cancel()
