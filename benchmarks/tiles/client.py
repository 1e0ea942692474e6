"""A lean HTTP/1.1 keep-alive load generator (asyncio streams, one request in flight per connection).

Why not httpx: on a two-core machine the client shares the CPU with the two server workers, and a
full-featured client would cost more per request than the server's warm path and so measure the
client. Each connection keeps its own list of URLs in both passes, so with a keep-alive connection
pinned to one worker process, the warm pass asks each worker for tiles it cached in the cold pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class PassResult:
    requests: int
    seconds: float
    bytes: int
    statuses: dict[int, int]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


class Connection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, int]:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status, length

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _drive(connection: Connection, paths: Sequence[str], statuses: dict[int, int]) -> int:
    total = 0
    for path in paths:
        status, length = await connection.get(path)
        statuses[status] = statuses.get(status, 0) + 1
        total += length
    return total


async def run_pass(connections: Sequence[Connection], partitions: Sequence[Sequence[str]]) -> PassResult:
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    sizes = await asyncio.gather(
        *(_drive(c, p, statuses) for c, p in zip(connections, partitions, strict=True))
    )
    elapsed = time.perf_counter() - started
    return PassResult(sum(len(p) for p in partitions), elapsed, sum(sizes), statuses)
