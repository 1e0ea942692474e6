"""A minimal aiortc participant speaking our signaling protocol (a real WebRTC stack)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from websockets.asyncio.client import ClientConnection, connect


class SignalClient:
    """One signaling socket: sends the join token first, then queues every message by type."""

    def __init__(self, ws_base: str, session_id: str, token: str) -> None:
        self.url = f"{ws_base}/api/v1/sessions/{session_id}/signal"
        self.token = token
        self.ws: ClientConnection | None = None
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SignalClient:
        self.ws = await connect(self.url)
        await self.send({"type": "join", "token": self.token})
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()
        if self._reader:
            self._reader.cancel()

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            await self.messages.put(json.loads(raw))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))

    async def expect(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next message of ``kind``, skipping others (presence, pongs)."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), timeout)
            if message["type"] == kind:
                return message


async def close_code(ws_base: str, session_id: str, token: str) -> int:
    """Present a token and return the close code the server answers with."""
    async with connect(f"{ws_base}/api/v1/sessions/{session_id}/signal") as ws:
        await ws.send(json.dumps({"type": "join", "token": token}))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except Exception:  # noqa: BLE001 - ConnectionClosed is what we wait for
            assert ws.close_code is not None
            return ws.close_code


def peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def description(data: dict[str, Any]) -> RTCSessionDescription:
    return RTCSessionDescription(sdp=data["sdp"], type=data["type"])


def as_dict(pc: RTCPeerConnection) -> dict[str, str]:
    local = pc.localDescription
    return {"type": local.type, "sdp": local.sdp}


async def receive_frames(track: MediaStreamTrack, count: int, timeout: float = 15) -> list[Any]:
    frames: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            frames.append(await track.recv())
    return frames


def first_video(arrived: asyncio.Future[MediaStreamTrack], track: MediaStreamTrack) -> None:
    """A ``track`` handler: resolve ``arrived`` with the first video track."""
    if track.kind == "video" and not arrived.done():
        arrived.set_result(track)
