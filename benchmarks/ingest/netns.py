"""Network isolation for the benchmark: a private namespace, optionally a veth pair at MTU 1500.

Why: Orthanc 1.10 cannot bind to loopback only, and the benchmark must not expose listeners
on the host, so the whole harness re-executes itself in a fresh network namespace
(``unshare --net``) where only ``lo`` exists. Loopback has an MTU of 65536, which hides
delayed-ACK stalls that show at Ethernet MTU (FIELD-NOTES, Networking): the ``veth`` network
puts the servers in a second namespace joined by a veth pair at MTU 1500.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

IN_NETNS_ENV = "HOICHAN_BENCH_IN_NETNS"


def reexec_in_private_netns(argv: Sequence[str]) -> None:
    """Re-run this module inside ``unshare --net`` unless already there (never returns then)."""
    if os.environ.get(IN_NETNS_ENV) == "1":
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        raise SystemExit("benchmarks.ingest needs root, unshare and ip (it isolates itself in a netns)")
    env = dict(os.environ, **{IN_NETNS_ENV: "1"})
    cmd = ["unshare", "--net", "--", sys.executable, "-m", "benchmarks.ingest", *argv]
    os.execvpe("unshare", cmd, env)  # noqa: S606 - fixed argv, no shell


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Network:
    """Where servers run and how clients reach them.

    ``server_prefix`` is prepended to a server's argv (``ip netns exec NS`` for veth);
    ``host`` is the address clients connect to.
    """

    name: str
    host: str
    mtu: int
    server_prefix: list[str] = field(default_factory=list)

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def loopback() -> Network:
    """Servers and clients share the private namespace's ``lo`` (MTU 65536)."""
    _ip("link", "set", "lo", "up")
    return Network(name="loopback", host="127.0.0.1", mtu=65536)


class VethNetwork(Network):
    """Servers in their own namespace behind a veth pair; deleted on exit (with the veth)."""

    CLIENT_ADDR = "10.203.0.1"
    SERVER_ADDR = "10.203.0.2"

    def __init__(self, mtu: int = 1500) -> None:
        self.ns = f"hoichan-bench-{os.getpid()}"
        super().__init__(
            name=f"veth-mtu{mtu}",
            host=self.SERVER_ADDR,
            mtu=mtu,
            server_prefix=["ip", "netns", "exec", self.ns],
        )

    def __enter__(self) -> VethNetwork:
        _ip("link", "set", "lo", "up")
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", "hbc0", "type", "veth", "peer", "name", "hbs0", "netns", self.ns)
            _ip("addr", "add", f"{self.CLIENT_ADDR}/30", "dev", "hbc0")
            _ip("link", "set", "hbc0", "mtu", str(self.mtu), "up")
            inside = ["netns", "exec", self.ns, "ip"]
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "addr", "add", f"{self.SERVER_ADDR}/30", "dev", "hbs0")
            _ip(*inside, "link", "set", "hbs0", "mtu", str(self.mtu), "up")
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._delete()

    def _delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
