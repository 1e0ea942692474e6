"""Headless Chromium with fake media devices joins the session page, and an aiortc participant
on the other end: each side's video really plays; the page's Leave button leaves the session."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp

from tests.conftest import Network
from tests.consult_api.sessions.conftest import LiveServer, join, open_session
from tests.consult_api.sessions.rtc import (
    SignalClient,
    as_dict,
    description,
    first_video,
    peer_connection,
    receive_frames,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).with_name("browser_join.cjs")
PLAYWRIGHT = Path(__file__).parents[3] / "viewer" / "node_modules" / "playwright-core"


def _skip_without_browser() -> str:
    node = shutil.which("node")
    if node is None or not CHROMIUM.exists() or not PLAYWRIGHT.exists():
        pytest.skip("needs node, /usr/bin/chromium and viewer/node_modules/playwright-core")
    return node


async def _apply(pc: RTCPeerConnection, signal: SignalClient, browser_id: str, data: dict[str, Any]) -> None:
    """Play our half of the page's protocol: answer offers, take answers, add trickled candidates."""
    if "sdp" in data and data["sdp"]["type"] == "offer":
        await pc.setRemoteDescription(description(data["sdp"]))
        await pc.setLocalDescription(await pc.createAnswer())
        await signal.send({"type": "signal", "to": browser_id, "data": {"sdp": as_dict(pc)}})
    elif "sdp" in data:
        await pc.setRemoteDescription(description(data["sdp"]))
    elif data.get("candidate", {}).get("candidate"):
        raw = data["candidate"]
        candidate = candidate_from_sdp(raw["candidate"].split(":", 1)[1])
        candidate.sdpMid, candidate.sdpMLineIndex = raw.get("sdpMid"), raw.get("sdpMLineIndex")
        await pc.addIceCandidate(candidate)


async def _aiortc_side(
    live: LiveServer, session_id: str, token: str, me: str, browser_id: str, page_url: str, node: str
) -> tuple[dict[str, Any], list[Any]]:
    pc = peer_connection()
    pc.addTrack(VideoStreamTrack())
    video: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    pc.on("track", lambda track: first_video(video, track))
    async with SignalClient(live.ws_base, session_id, token) as signal:
        await signal.expect("welcome")
        browser = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), page_url, str(CHROMIUM), stdout=asyncio.subprocess.PIPE
        )
        await signal.expect("peer-joined")
        if me < browser_id:  # the page's rule: the smaller user id offers
            await pc.setLocalDescription(await pc.createOffer())
            await signal.send({"type": "signal", "to": browser_id, "data": {"sdp": as_dict(pc)}})

        async def pump() -> None:
            while True:
                message = await signal.expect("signal", timeout=60)
                await _apply(pc, signal, browser_id, message["data"])

        pumping = asyncio.create_task(pump())
        try:
            frames = await receive_frames(await asyncio.wait_for(video, 30), 10, timeout=30)
            stdout, _ = await asyncio.wait_for(browser.communicate(), 60)
        finally:
            pumping.cancel()
            await pc.close()
    return json.loads(stdout.decode().strip().splitlines()[-1]), frames


def test_chromium_joins_the_session_page_and_video_plays(
    live: LiveServer, network: Network, case_id: str, loopback_ice: None
) -> None:
    node = _skip_without_browser()
    invitees = [{"user_id": network.uid("ref_d1"), "role": "speaker"}]
    session = open_session(live.http, live["rad_c1"], case_id, invitees)
    sid = str(session["id"])
    ours = join(live.http, live["rad_c1"], sid)
    theirs = join(live.http, live["ref_d1"], sid)
    report, frames = asyncio.run(
        _aiortc_side(
            live,
            sid,
            str(ours["token"]),
            network.uid("rad_c1"),
            network.uid("ref_d1"),
            f"{live.base}{theirs['page_url']}",
            node,
        )
    )
    assert report["ok"], report
    assert report["remote"]["width"] == 640 and report["remote"]["time"] > 0.5  # aiortc's frames, playing
    assert report["local"]["width"] > 0 and not report["local"]["paused"]  # Chromium's fake camera
    assert report["hashAfterLoad"] == ""  # the token does not stay in the address bar
    assert any("presenting" in p for p in report["participants"])
    assert len(frames) == 10 and frames[0].width > 0  # and the fake camera reached aiortc
    assert "left" in report["status"]
    read = live.http.get(f"/api/v1/sessions/{sid}", headers=live["rad_c1"]).json()
    left = {p["user_id"]: p["left_at"] for p in read["participants"]}
    assert left[network.uid("ref_d1")] is not None
