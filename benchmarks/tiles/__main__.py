"""``python -m benchmarks.tiles``: DeepZoom tiles over HTTP against OpenSlide in-process.

Same slide, same run, same tile list: random viewport-like access (a 1600x900 screen at a random
position of one of the six most detailed DeepZoom levels, every tile it shows), de-duplicated so
the cold pass misses the tile cache on every request. The reference is OpenSlide's own
``DeepZoomGenerator.get_tile`` called in-process (no HTTP, no JPEG encoding), with one thread and
with as many threads as there are server workers. Targets (issue 4): cold HTTP >= 0.8x the
in-process reference; warm HTTP >= 2,000 tiles/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator

from benchmarks.tiles.client import Connection, PassResult, run_pass
from benchmarks.tiles.setup import PASSWORD, READER, Prepared, prepare, synthetic_slide
from consult_api.slides.tiles import OpenedSlide, choose_tile_size

Tile = tuple[int, int, int]


def viewport_tiles(
    dz: DeepZoomGenerator, rng: np.random.Generator, viewports: int, screen: tuple[int, int]
) -> list[Tile]:
    """Tiles of random screens on the six most detailed levels, in viewing order, each once."""
    tile = dz._z_t_downsample
    seen: dict[Tile, None] = {}
    levels = range(dz.level_count - 6, dz.level_count)
    for _ in range(viewports):
        level = int(rng.choice(levels))
        width, height = dz.level_dimensions[level]
        x = int(rng.integers(0, max(1, width - screen[0])))
        y = int(rng.integers(0, max(1, height - screen[1])))
        cols, rows = dz.level_tiles[level]
        for row in range(y // tile, min(rows, (y + screen[1]) // tile + 1)):
            for col in range(x // tile, min(cols, (x + screen[0]) // tile + 1)):
                seen.setdefault((level, col, row), None)
    return list(seen)


def in_process(path: Path, tiles: list[Tile], tile_size: int, threads: int) -> float:
    """OpenSlide's DeepZoomGenerator.get_tile on a freshly opened slide: tiles per second."""
    dz = DeepZoomGenerator(OpenSlide(str(path)), tile_size=tile_size, overlap=0, limit_bounds=False)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda t: dz.get_tile(t[0], (t[1], t[2])), tiles):
            pass
    return len(tiles) / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(prepared: Prepared, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HOICHAN_DATA_DIR": str(prepared.data_dir),
        "HOICHAN_DATABASE_URL": prepared.database_url,
        "HOICHAN_SECRET_KEY": secrets.token_urlsafe(48),
        "HOICHAN_LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable, "-m", "uvicorn", "consult_api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                time.sleep(1.0)  # let every worker finish starting
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server did not start; see {log}")


def _token(port: int) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/auth/token",
        data={"username": READER, "password": PASSWORD},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _http_passes(
    port: int, token: str, slide_id: str, tiles: list[Tile], clients: int, warm_passes: int
) -> tuple[PassResult, PassResult]:
    headers = {"Authorization": f"Bearer {token}"}
    connections = [Connection("127.0.0.1", port, headers) for _ in range(clients)]
    for connection in connections:
        await connection.open()
    base = f"/api/v1/slides/{slide_id}"
    for connection in connections:  # open the slide and take the tile grant on whichever worker
        await connection.get(f"{base}.dzi")
        await connection.get(f"{base}_files/0/0_0.jpeg")
    partitions = [
        [f"{base}_files/{lv}/{c}_{r}.jpeg" for lv, c, r in tiles[i::clients]] for i in range(clients)
    ]
    cold = await run_pass(connections, partitions)
    warm = await run_pass(connections, [p * warm_passes for p in partitions])
    for connection in connections:
        await connection.close()
    return cold, warm


def _passthrough_share(path: Path, tiles: list[Tile]) -> float:
    opened = OpenedSlide.open("bench", path)
    width = {lv: opened.dz.level_dimensions[lv] for lv in opened.raw}
    hits = sum(
        1
        for lv, c, r in tiles
        if lv in opened.raw
        and (c + 1) * opened.tile <= width[lv][0]
        and (r + 1) * opened.tile <= width[lv][1]
    )
    return hits / len(tiles)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiles", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("var/bench-tiles"))
    parser.add_argument("--side", type=int, default=20_000, help="slide width and height in pixels")
    parser.add_argument("--viewports", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--warm-passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"slide: synthetic {args.side}x{args.side} (generated once under {args.workdir})", flush=True)
    slide_path = synthetic_slide(args.workdir, args.side)
    prepared = prepare(args.workdir, slide_path)
    osr = OpenSlide(str(slide_path))
    tile_size = choose_tile_size(osr)
    dz = DeepZoomGenerator(osr, tile_size=tile_size, overlap=0, limit_bounds=False)
    tiles = viewport_tiles(dz, np.random.default_rng(args.seed), args.viewports, (1600, 900))
    share = _passthrough_share(slide_path, tiles)
    print(
        f"{len(tiles)} distinct tiles from {args.viewports} viewports; "
        f"{share:.0%} are stored tiles passed through"
    )

    one = in_process(slide_path, tiles, tile_size, 1)
    many = in_process(slide_path, tiles, tile_size, args.workers)
    port = _free_port()
    server = start_server(prepared, port, args.workers, args.workdir / "server.log")
    try:
        cold, warm = asyncio.run(
            _http_passes(port, _token(port), prepared.slide_id, tiles, args.clients, args.warm_passes)
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name, result in (("cold", cold), ("warm", warm)):
        if set(result.statuses) != {200}:
            print(f"{name} pass answered {result.statuses}")
            return 1
    _report(len(tiles), one, many, cold, warm, args)
    return 0


def _report(
    n: int, one: float, many: float, cold: PassResult, warm: PassResult, args: argparse.Namespace
) -> None:
    print(f"\ncpu cores: {os.cpu_count()}, uvicorn workers: {args.workers}, clients: {args.clients}")
    print(f"{'measure':<58}{'tiles/s':>10}")
    print(f"{'OpenSlide DeepZoomGenerator.get_tile, in-process, 1 thread':<58}{one:>10.0f}")
    print(f"{f'OpenSlide DeepZoomGenerator.get_tile, in-process, {args.workers} threads':<58}{many:>10.0f}")
    print(f"{'Hoichan over HTTP, cold tile cache':<58}{cold.per_second:>10.0f}")
    print(f"{'Hoichan over HTTP, warm tile cache':<58}{warm.per_second:>10.0f}")
    print(f"\ncold HTTP / in-process 1 thread:   {cold.per_second / one:5.2f}x  (target >= 0.8x)")
    print(f"cold HTTP / in-process {args.workers} threads:  {cold.per_second / many:5.2f}x")
    print(f"warm HTTP / in-process 1 thread:   {warm.per_second / one:5.2f}x")
    verdict = "met" if warm.per_second >= 2000 else "NOT met"
    print(f"warm HTTP: {warm.per_second:.0f} tiles/s (target >= 2,000: {verdict})")
    print(f"mean tile {cold.bytes / n / 1024:.1f} KiB")


if __name__ == "__main__":
    raise SystemExit(main())
