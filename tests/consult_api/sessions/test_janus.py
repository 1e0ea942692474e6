"""Through a real Janus VideoRoom in a namespace of its own: Hoichan creates the room, one aiortc
speaker publishes, three subscribe-only attendees (two facilities) receive its frames, and an
attendee's attempt to publish is refused by Janus itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack
from fastapi.testclient import TestClient

from consult_api.app import create_app
from consult_api.config import Settings, VideoProvider
from tests.conftest import Actors, Network
from tests.consult_api.sessions import janus_harness as harness
from tests.consult_api.sessions.conftest import join, open_session
from tests.consult_api.sessions.rtc import as_dict, description, first_video, peer_connection, receive_frames

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ATTENDEES = ("ref_d1", "ref_d1b", "fadm_c1")
UNAUTHORIZED = 433


@pytest.fixture(scope="module")
def janus_ns() -> Iterator[harness.Namespace]:
    reason = harness.unavailable()
    if reason:
        pytest.skip(reason)
    yield from harness.namespace()


@pytest.fixture
def janus_url(janus_ns: harness.Namespace, tmp_path: Path) -> Iterator[str]:
    yield from harness.run_janus(tmp_path, janus_ns)


@pytest.fixture
def janus_client(settings: Settings, janus_url: str) -> Iterator[TestClient]:
    janus_settings = settings.model_copy(
        update={"video_provider": VideoProvider.janus, "janus_url": janus_url}
    )
    with TestClient(create_app(janus_settings)) as client:
        yield client


@pytest.fixture
def veth_ice(monkeypatch: pytest.MonkeyPatch, janus_ns: harness.Namespace) -> None:
    """Our aiortc peers offer only our end of the veth pair: media stays on the test link."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [janus_ns.host_ip])


async def _publish(janus_url: str, room: int, token: str) -> tuple[harness.JanusSession, Any, int]:
    session = await harness.JanusSession(janus_url).__aenter__()
    handle = await session.attach()
    body = {"request": "join", "ptype": "publisher", "room": room, "token": token, "display": "speaker"}
    joined = harness.plugin_data(await session.message(handle, body))
    assert joined["videoroom"] == "joined", joined
    pc = peer_connection()
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    answer = await session.message(handle, {"request": "publish"}, jsep={**as_dict(pc), "trickle": False})
    await pc.setRemoteDescription(description(answer["jsep"]))
    return session, pc, int(joined["id"])


async def _subscribe(session: harness.JanusSession, room: int, feed: int) -> tuple[Any, MediaStreamTrack]:
    handle = await session.attach()
    body = {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
    offer = await session.message(handle, body)
    assert harness.plugin_data(offer)["videoroom"] == "attached", offer
    pc = peer_connection()
    track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    pc.on("track", lambda t: first_video(track, t))
    await pc.setRemoteDescription(description(offer["jsep"]))
    await pc.setLocalDescription(await pc.createAnswer())
    started = await session.message(handle, {"request": "start"}, jsep={**as_dict(pc), "trickle": False})
    assert harness.plugin_data(started).get("started") == "ok", started
    return pc, await asyncio.wait_for(track, 15)


async def _publish_refused(session: harness.JanusSession, room: int, token: str | None) -> int:
    handle = await session.attach()
    body: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": room, "display": "attendee"}
    if token is not None:
        body["token"] = token
    data = harness.plugin_data(await session.message(handle, body))
    return int(data.get("error_code", 0))


async def _conference(janus_url: str, speaker: dict[str, Any], attendees: list[dict[str, Any]]) -> list[int]:
    room = speaker["media"]["room"]
    publisher, speaker_pc, feed = await _publish(janus_url, room, speaker["media"]["token"])
    viewers: list[Any] = []
    try:
        sessions = [await harness.JanusSession(janus_url).__aenter__() for _ in attendees]
        subscriptions = await asyncio.gather(*(_subscribe(s, room, feed) for s in sessions))
        viewers = [pc for pc, _ in subscriptions]
        received = await asyncio.gather(*(receive_frames(track, 15) for _, track in subscriptions))
        assert all(len(frames) == 15 and frames[-1].width == 640 for frames in received)
        refusals = [
            await _publish_refused(sessions[0], room, attendees[0]["media"]["token"]),
            await _publish_refused(sessions[1], room, "a-guessed-token"),
        ]
        for s in sessions:
            await s.__aexit__(None, None, None)
        return [len(received), *refusals]
    finally:
        for pc in [speaker_pc, *viewers]:
            await pc.close()
        await publisher.__aexit__(None, None, None)


def test_speaker_publishes_three_attendees_only_receive(
    janus_client: TestClient, as_: Actors, network: Network, case_id: str, janus_url: str, veth_ice: None
) -> None:
    client = janus_client
    invitees = [{"user_id": network.uid(name), "role": "attendee"} for name in ATTENDEES]
    session = open_session(client, as_["rad_c1"], case_id, invitees)
    assert session["provider"] == "janus"
    speaker = join(client, as_["rad_c1"], session["id"])
    assert speaker["media"]["publish"] is True and speaker["media"]["token"]  # type: ignore[index]
    attendees = [join(client, as_[name], session["id"]) for name in ATTENDEES]
    assert all(a["media"] == {**speaker["media"], "publish": False, "token": None} for a in attendees)  # type: ignore[dict-item]

    outcome = asyncio.run(_conference(janus_url, speaker, attendees))
    assert outcome == [3, UNAUTHORIZED, UNAUTHORIZED]

    ended = client.post(f"/api/v1/sessions/{session['id']}/end", headers=as_["rad_c1"])
    assert ended.status_code == 200, ended.text

    async def room_gone() -> int:
        async with harness.JanusSession(janus_url) as probe:
            return await _publish_refused(probe, speaker["media"]["room"], speaker["media"]["token"])  # type: ignore[index]

    assert asyncio.run(room_gone()) == 426  # no such room: Hoichan destroyed it
