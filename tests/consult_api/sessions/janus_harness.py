"""A Janus server on a test host of its own (a network namespace joined to ours by a veth pair),
and a small asynchronous client of its HTTP API.

Janus never offers loopback ICE candidates, so it cannot be tested on 127.0.0.1; inside the
namespace it gathers candidates on its veth end only, and our aiortc peers use the other end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PLUGINS = Path("/usr/lib/x86_64-linux-gnu/janus")
UNUSED_PLUGINS = (
    "audiobridge echotest nosip recordplay sip streaming textroom videocall voicemail lua duktape"
)
UNUSED_TRANSPORTS = "websockets mqtt nanomsg pfunix rabbitmq"


@dataclass(frozen=True)
class Namespace:
    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=10)


def unavailable() -> str | None:
    """Why this machine cannot run the Janus test, or None."""
    if shutil.which("janus") is None or not PLUGINS.exists():
        return "janus is not installed (apt-get install janus)"
    if shutil.which("ip") is None:
        return "iproute2 (ip netns) is not installed"
    probe = f"hoi-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError):
        return "cannot create network namespaces here (needs root / CAP_NET_ADMIN)"
    return None


def namespace() -> Iterator[Namespace]:
    """Create a namespace and a veth pair on a /30 of our own; delete both afterwards."""
    tag = f"{os.getpid() % 10000}{secrets.token_hex(1)}"
    octet = 100 + secrets.randbelow(150)
    ns = Namespace(f"hoi-janus-{tag}", f"hjh{tag}", f"hjn{tag}", f"10.{octet}.77.1", f"10.{octet}.77.2")
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if, netns=ns.name)
        _ip("link", "set", ns.ns_if, "up", netns=ns.name)
        _ip("link", "set", "lo", "up", netns=ns.name)
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=10)


def write_config(folder: Path, ns: Namespace) -> None:
    disabled_plugins = ",".join(f"libjanus_{p}.so" for p in UNUSED_PLUGINS.split())
    disabled_transports = ",".join(f"libjanus_{t}.so" for t in UNUSED_TRANSPORTS.split())
    (folder / "janus.jcfg").write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{PLUGINS}/plugins"
    transports_folder = "{PLUGINS}/transports"
    events_folder = "{PLUGINS}/events"
    loggers_folder = "{PLUGINS}/loggers"
    debug_level = 3
}}
media: {{ rtp_port_range = "20000-20999" }}
nat: {{ ice_enforce_list = "{ns.ns_if}" }}
plugins: {{ disable = "{disabled_plugins}" }}
transports: {{ disable = "{disabled_transports}" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{ json = "compact" base_path = "/janus" http = true port = 8088 ip = "{ns.ns_ip}" }}
admin: {{ admin_http = false }}
"""
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")


def run_janus(folder: Path, ns: Namespace) -> Iterator[str]:
    """Start Janus inside the namespace; yields its HTTP API URL and stops it afterwards."""
    write_config(folder, ns)
    log = (folder / "janus.log").open("w")
    process = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, "janus", "-F", str(folder)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://{ns.ns_ip}:8088/janus"
    try:
        _wait_until_up(url, process, folder)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"janus exited: {(folder / 'janus.log').read_text()[-2000:]}")
        try:
            if httpx.post(url, json={"janus": "info", "transaction": "up"}, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("janus did not answer within 15 s")


class JanusSession:
    """One Janus session over HTTP: requests by POST, events by long poll, routed by transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=40)
        self.id = 0
        self.waiting: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JanusSession:
        self.id = (await self._post(self.url, {"janus": "create"}))["data"]["id"]
        self._poller = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._poller:
            self._poller.cancel()
        await self._post(f"{self.url}/{self.id}", {"janus": "destroy"})
        await self.http.aclose()

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(url, json={"transaction": secrets.token_hex(6), **body})
        response.raise_for_status()
        reply: dict[str, Any] = response.json()
        return reply

    async def _poll(self) -> None:
        while True:
            response = await self.http.get(f"{self.url}/{self.id}", params={"maxev": 10})
            events = response.json()
            for event in events if isinstance(events, list) else [events]:
                queue = self.waiting.get(event.get("transaction", ""))
                if queue is not None:
                    queue.put_nowait(event)

    async def attach(self) -> int:
        reply = await self._post(
            f"{self.url}/{self.id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        return int(reply["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout: float = 10
    ) -> dict[str, Any]:
        """Send a plugin request and return its event (with ``jsep`` when Janus answers or offers)."""
        transaction = secrets.token_hex(6)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.waiting[transaction] = queue
        request: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            reply = (await self.http.post(f"{self.url}/{self.id}/{handle}", json=request)).json()
            if reply.get("janus") != "ack":
                return dict(reply)
            while True:
                event = await asyncio.wait_for(queue.get(), timeout)
                if event.get("janus") == "event":
                    return event
        finally:
            del self.waiting[transaction]


def plugin_data(event: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = event["plugindata"]["data"]
    return data
