"""Embedded Celery transports side by side: tasks/s through a real worker process.

    python -m benchmarks.triage.broker [--tasks 500] [--concurrency 1]

For each transport (``filesystem://``, ``sqla+sqlite://``, and Redis/RabbitMQ when reachable):
publish N no-op tasks (publish rate), then start ``celery worker`` and time the drain (consume
rate, acks_late + prefetch 1 as in ``consult_api.worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL = float(os.environ.get("BENCH_POLL", "0.1"))


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def run(url: str, tasks: int, concurrency: int, folder: Path) -> tuple[float, float]:
    done = folder / "done"
    env = {
        **os.environ,
        "BENCH_BROKER_URL": url,
        "BENCH_BROKER_DIR": str(folder / "q"),
        "BENCH_DONE_FILE": str(done),
        "BENCH_POLL": str(POLL),
    }
    (folder / "q" / "c").mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    from benchmarks.triage import noop_app

    app = noop_app.app
    app.conf.broker_url = url
    app.conf.broker_transport_options = (
        {
            "data_folder_in": env["BENCH_BROKER_DIR"],
            "data_folder_out": env["BENCH_BROKER_DIR"],
            "control_folder": env["BENCH_BROKER_DIR"] + "/c",
            "polling_interval": POLL,
        }
        if url.startswith("filesystem")
        else {}
    )
    noop_app.DONE = done
    if not url.startswith(("filesystem", "sqla")):
        with app.connection_for_write() as conn, contextlib.suppress(Exception):  # queue may not exist
            conn.default_channel.queue_purge("celery")
    start = time.perf_counter()
    with app.producer_pool.acquire(block=True) as producer:
        for _ in range(tasks):
            app.send_task("bench.noop", producer=producer)
    publish = tasks / (time.perf_counter() - start)
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks.triage.noop_app",
        "worker",
        "-c",
        str(concurrency),
        "--prefetch-multiplier",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]
    log = (folder / "worker.log").open("w")
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        while not done.exists():
            time.sleep(0.01)
        start, first = time.perf_counter(), done.stat().st_size
        while done.stat().st_size < tasks:
            time.sleep(0.02)
            if time.perf_counter() - start > 300:
                raise TimeoutError(f"{url}: only {done.stat().st_size} of {tasks} ran")
        consume = (tasks - first) / (time.perf_counter() - start)
    finally:
        worker.kill()
        worker.wait()
        log.close()
    return publish, consume


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"filesystem": "filesystem://", "sqla+sqlite": f"sqla+sqlite:///{tmp}/broker.db"}
        if _reachable(6379):
            urls["redis"] = "redis://127.0.0.1:6379/15"
        if _reachable(5672):
            urls["rabbitmq"] = "amqp://guest:guest@127.0.0.1:5672//"
        for name, url in urls.items():
            if args.only and name != args.only:
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            publish, consume = run(url, args.tasks, args.concurrency, folder)
            print(
                f"{name:12s} publish {publish:8.0f} tasks/s   "
                f"worker (c={args.concurrency}) {consume:7.1f} tasks/s"
            )


if __name__ == "__main__":
    main()
