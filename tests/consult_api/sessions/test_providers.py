"""Providers and helpers without servers: LiveKit grants, TURN credentials, SDP directions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from livekit import api

from consult_api.config import Settings, VideoProvider
from consult_api.sessions.ice import IceConfig, ice_servers
from consult_api.sessions.models import ParticipantRole
from consult_api.sessions.providers import build_provider
from consult_api.sessions.providers.base import Seat
from consult_api.sessions.providers.livekit import LiveKitProvider
from consult_api.sessions.sdp import sends_media

KEY, SECRET = "APIhoichan", "s" * 40


def _seat(role: ParticipantRole, record: bool = False) -> Seat:
    return Seat(
        "sess-1",
        "hoichan-sess-1",
        f"user-{role.value}",
        f"Dr {role.value}",
        role,
        record,
        timedelta(minutes=10),
    )


@pytest.mark.parametrize(
    ("role", "record", "publish", "admin", "may_record"),
    [
        (ParticipantRole.host, True, True, True, True),
        (ParticipantRole.host, False, True, True, False),
        (ParticipantRole.speaker, True, True, False, False),
        (ParticipantRole.attendee, True, False, False, False),
    ],
)
def test_livekit_tokens_decode_to_the_grants_of_each_role(
    role: ParticipantRole, record: bool, publish: bool, admin: bool, may_record: bool
) -> None:
    provider = LiveKitProvider(url="wss://sfu.example.org", api_key=KEY, api_secret=SECRET)
    seat = _seat(role, record)
    media = provider.admit(seat)
    assert media["livekit_url"] == "wss://sfu.example.org" and media["room"] == "hoichan-sess-1"
    claims = api.TokenVerifier(KEY, SECRET).verify(media["token"])
    assert claims.identity == seat.user_id and claims.name == seat.display_name
    assert json.loads(claims.metadata) == {"session_id": "sess-1", "role": role.value}
    video = claims.video
    assert video is not None and video.room_join and video.room == "hoichan-sess-1"
    assert video.can_subscribe is True
    assert video.can_publish is publish and video.can_publish_data is publish
    assert bool(video.room_admin) is admin and bool(video.room_record) is may_record
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        api.TokenVerifier(KEY, "x" * 40).verify(media["token"])


def test_livekit_needs_its_credentials(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="livekit provider needs"):
        Settings(video_provider=VideoProvider.livekit, livekit_url="wss://sfu.example.org")
    settings = Settings(
        video_provider=VideoProvider.livekit,
        livekit_url="wss://x",
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
    )
    assert build_provider(settings).name == "livekit"


def test_turn_credentials_follow_coturns_rest_scheme() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    config = IceConfig(
        stun_urls=("stun:turn.example.org:3478",),
        turn_urls=("turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"),
        turn_shared_secret="coturn-secret",
    )
    stun, turn = ice_servers(config, "user-1", now, timedelta(hours=12))
    assert stun == {"urls": ["stun:turn.example.org:3478"]}
    expiry = int((now + timedelta(hours=12)).timestamp())
    assert turn["username"] == f"{expiry}:user-1"
    expected = base64.b64encode(hmac.new(b"coturn-secret", turn["username"].encode(), hashlib.sha1).digest())
    assert turn["credential"] == expected.decode()
    assert ice_servers(IceConfig(), "user-1", now, timedelta(hours=1)) == []


OFFER_HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("body", "sends"),
    [
        ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n", False),
        ("m=audio 9 RTP/SAVPF 111\r\na=inactive\r\nm=video 9 RTP/SAVPF 96\r\na=recvonly\r\n", False),
        ("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n", True),
        ("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", True),  # no attribute: sendrecv
        ("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n", False),  # rejected section
        ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", False),
    ],
)
def test_sdp_direction_is_read_per_media_section(body: str, sends: bool) -> None:
    assert sends_media(OFFER_HEAD + body) is sends
