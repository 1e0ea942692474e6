"""Media providers: who carries a session's audio and video, chosen by configuration."""

from __future__ import annotations

from consult_api.config import Settings, VideoProvider
from consult_api.sessions.providers.base import MediaProvider, RoomSpec, Seat
from consult_api.sessions.providers.builtin import BuiltinProvider
from consult_api.sessions.providers.janus import JanusProvider
from consult_api.sessions.providers.livekit import LiveKitProvider

__all__ = ["MediaProvider", "RoomSpec", "Seat", "build_provider"]


def build_provider(settings: Settings) -> MediaProvider:
    """The composition root calls this once; nothing here opens a connection."""
    if settings.video_provider is VideoProvider.janus:
        return JanusProvider(
            api_url=settings.janus_url,
            public_url=settings.janus_public_url or settings.janus_url,
            signing_key=settings.signing_key,
            admin_key=settings.janus_admin_key.get_secret_value() if settings.janus_admin_key else None,
            max_publishers=settings.janus_max_publishers,
        )
    if settings.video_provider is VideoProvider.livekit:
        secret = settings.livekit_api_secret.get_secret_value() if settings.livekit_api_secret else ""
        return LiveKitProvider(
            url=settings.livekit_url or "", api_key=settings.livekit_api_key or "", api_secret=secret
        )
    return BuiltinProvider()
