"""Two aiortc peers meet through our signaling socket with their join tokens and exchange real
video and audio frames and a data-channel message; bad tokens and attendee media are refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from consult_api.config import Settings
from consult_api.sessions.tokens import JoinTokens
from tests.conftest import Network
from tests.consult_api.sessions.conftest import LiveServer, join, open_session
from tests.consult_api.sessions.rtc import (
    SignalClient,
    as_dict,
    close_code,
    description,
    peer_connection,
    receive_frames,
)

pytestmark = pytest.mark.integration


def _two_party(live: LiveServer, network: Network, case_id: str) -> tuple[str, str, str]:
    invitees = [{"user_id": network.uid("ref_d1"), "role": "speaker"}]
    session = open_session(live.http, live["rad_c1"], case_id, invitees)
    host = join(live.http, live["rad_c1"], session["id"])
    guest = join(live.http, live["ref_d1"], session["id"])
    return str(session["id"]), str(host["token"]), str(guest["token"])


def _tracks(pc: RTCPeerConnection) -> dict[str, asyncio.Future[MediaStreamTrack]]:
    arrived: dict[str, asyncio.Future[MediaStreamTrack]] = {
        "video": asyncio.get_running_loop().create_future(),
        "audio": asyncio.get_running_loop().create_future(),
    }

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if not arrived[track.kind].done():
            arrived[track.kind].set_result(track)

    return arrived


async def _call(live: LiveServer, session_id: str, tokens: tuple[str, str], users: tuple[str, str]) -> None:
    host_id, guest_id = users
    caller, callee = peer_connection(), peer_connection()
    got_by_callee, got_by_caller = _tracks(callee), _tracks(caller)
    message: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    callee.on("datachannel", lambda channel: channel.on("message", message.set_result))
    for pc in (caller, callee):
        pc.addTrack(VideoStreamTrack())
        pc.addTrack(AudioStreamTrack())
    channel = caller.createDataChannel("view")
    channel.on("open", lambda: channel.send("follow me: series 2, slice 41"))
    try:
        async with SignalClient(live.ws_base, session_id, tokens[0]) as host:
            welcome = await host.expect("welcome")
            assert welcome["online"] == [host_id] and welcome["presenter"] == host_id
            # The offer goes out before the guest is connected: the relay must hold it.
            await caller.setLocalDescription(await caller.createOffer())
            await host.send({"type": "signal", "to": guest_id, "data": {"sdp": as_dict(caller)}})
            await asyncio.sleep(0.2)
            async with SignalClient(live.ws_base, session_id, tokens[1]) as guest:
                assert (await guest.expect("welcome"))["online"] == sorted([host_id, guest_id])
                offer = await guest.expect("signal")
                assert offer["from"] == host_id
                await callee.setRemoteDescription(description(offer["data"]["sdp"]))
                await callee.setLocalDescription(await callee.createAnswer())
                await guest.send({"type": "signal", "to": host_id, "data": {"sdp": as_dict(callee)}})
                answer = await host.expect("signal")
                await caller.setRemoteDescription(description(answer["data"]["sdp"]))

                video_at_guest = await receive_frames(await asyncio.wait_for(got_by_callee["video"], 10), 10)
                audio_at_guest = await receive_frames(await asyncio.wait_for(got_by_callee["audio"], 10), 5)
                video_at_host = await receive_frames(await asyncio.wait_for(got_by_caller["video"], 10), 10)
                assert await asyncio.wait_for(message, 10) == "follow me: series 2, slice 41"
    finally:
        await caller.close()
        await callee.close()
    assert {(f.width, f.height) for f in video_at_guest + video_at_host} == {(640, 480)}
    assert all(f.sample_rate > 0 for f in audio_at_guest)


def test_two_aiortc_peers_exchange_media_and_data(
    live: LiveServer, network: Network, case_id: str, loopback_ice: None
) -> None:
    session_id, host_token, guest_token = _two_party(live, network, case_id)
    users = (network.uid("rad_c1"), network.uid("ref_d1"))
    asyncio.run(_call(live, session_id, (host_token, guest_token), users))


def test_expired_foreign_and_forged_tokens_are_refused(
    live: LiveServer, network: Network, case_id: str, settings: Settings
) -> None:
    session_id, host_token, _ = _two_party(live, network, case_id)
    other = open_session(live.http, live["rad_c1"], case_id)
    tokens = JoinTokens(settings.signing_key, settings.jwt_algorithm, minutes=1)
    expired = tokens.issue(session_id, network.uid("rad_c1"), now=datetime.now(UTC) - timedelta(minutes=5))
    forged = JoinTokens("another-key-" + "y" * 40, settings.jwt_algorithm, 5).issue(
        session_id, network.uid("rad_c1")
    )
    access_token = live["rad_c1"]["Authorization"].removeprefix("Bearer ")

    async def codes() -> list[int]:
        return [
            await close_code(live.ws_base, session_id, expired),
            await close_code(live.ws_base, str(other["id"]), host_token),
            await close_code(live.ws_base, session_id, forged),
            await close_code(live.ws_base, session_id, access_token),
        ]

    assert asyncio.run(codes()) == [4401, 4403, 4401, 4401]


def test_attendee_media_refused_and_presenting_taken_over(
    live: LiveServer, network: Network, case_id: str
) -> None:
    invitees = [
        {"user_id": network.uid("ref_d1"), "role": "attendee"},
        {"user_id": network.uid("rad2_c1"), "role": "speaker"},
    ]
    session = open_session(live.http, live["rad_c1"], case_id, invitees)
    sid = str(session["id"])
    host_token = str(join(live.http, live["rad_c1"], sid)["token"])
    attendee_token = str(join(live.http, live["ref_d1"], sid)["token"])
    speaker_token = str(join(live.http, live["rad2_c1"], sid)["token"])
    host_id, speaker_id = network.uid("rad_c1"), network.uid("rad2_c1")

    async def scenario() -> None:
        sending = peer_connection()
        sending.addTrack(VideoStreamTrack())
        await sending.setLocalDescription(await sending.createOffer())
        # The host is admitted first, so it presents by default: the first non-attendee admitted
        # presents, and concurrent joins would otherwise make that order (and the test) racy.
        async with SignalClient(live.ws_base, sid, host_token) as host:
            await host.expect("welcome")
            async with (
                SignalClient(live.ws_base, sid, attendee_token) as attendee,
                SignalClient(live.ws_base, sid, speaker_token) as speaker,
            ):
                await attendee.expect("welcome")
                await speaker.expect("welcome")
                await _steer(host, attendee, speaker, sending, host_id, speaker_id, live_case)
        await sending.close()

    live_case = case_id
    asyncio.run(scenario())


async def _steer(
    host: SignalClient,
    attendee: SignalClient,
    speaker: SignalClient,
    sending: Any,
    host_id: str,
    speaker_id: str,
    live_case: str,
) -> None:
    """Attendees may not send media or present; the presenter steers; a speaker takes over."""
    await attendee.send({"type": "signal", "to": host_id, "data": {"sdp": as_dict(sending)}})
    assert "receive only" in (await attendee.expect("error"))["detail"]
    await attendee.send({"type": "present"})
    assert "cannot present" in (await attendee.expect("error"))["detail"]

    await host.send({"type": "view", "state": {"series_uid": "1.2.3", "slice": 41}})
    followed = await attendee.expect("view")
    assert followed["from"] == host_id and followed["state"]["slice"] == 41
    assert followed["state"]["case_id"] == live_case

    await speaker.send({"type": "present"})
    assert (await host.expect("presenter"))["user_id"] == speaker_id
    await host.send({"type": "view", "state": {"slice": 1}})
    assert "only the presenter" in (await host.expect("error"))["detail"]
    await speaker.send({"type": "view", "state": {"slide_id": "s1", "viewport": {"zoom": 4.0}}})
    assert (await attendee.expect("view"))["state"]["viewport"] == {"zoom": 4.0}
    await speaker.send({"type": "renew"})
    assert (await speaker.expect("token"))["token"]


def test_end_closes_every_socket(live: LiveServer, network: Network, case_id: str) -> None:
    session_id, host_token, guest_token = _two_party(live, network, case_id)

    async def scenario() -> None:
        async with SignalClient(live.ws_base, session_id, guest_token) as guest:
            await guest.expect("welcome")
            response = await asyncio.to_thread(
                live.http.post, f"/api/v1/sessions/{session_id}/end", headers=live["rad_c1"]
            )
            assert response.status_code == 200, response.text
            await guest.expect("ended")
        assert await close_code(live.ws_base, session_id, host_token) == 4409

    asyncio.run(scenario())


def test_a_dropped_peer_reconnects_with_its_renewed_token(
    live: LiveServer, network: Network, case_id: str
) -> None:
    session_id, host_token, guest_token = _two_party(live, network, case_id)
    guest_id = network.uid("ref_d1")

    async def scenario() -> None:
        async with SignalClient(live.ws_base, session_id, host_token) as host:
            await host.expect("welcome")
            async with SignalClient(live.ws_base, session_id, guest_token) as guest:
                renewed = (await guest.expect("welcome"))["token"]
                assert (await host.expect("peer-joined"))["peer"]["user_id"] == guest_id
            assert (await host.expect("peer-left"))["user_id"] == guest_id  # the link dropped
            await host.send(
                {"type": "signal", "to": guest_id, "data": {"sdp": {"type": "offer", "sdp": "v=0"}}}
            )
            async with SignalClient(live.ws_base, session_id, renewed) as guest:
                assert guest_id in (await guest.expect("welcome"))["online"]
                assert (await guest.expect("signal"))["data"]["sdp"]["type"] == "offer"  # held while away
                assert (await host.expect("peer-joined"))["peer"]["user_id"] == guest_id
                async with SignalClient(live.ws_base, session_id, renewed) as second_tab:
                    await second_tab.expect("welcome")
                    await asyncio.sleep(0.2)
                    assert guest.ws is not None and guest.ws.close_code == 4000  # replaced

    asyncio.run(scenario())
