"""Redis restarted while triage messages wait in it: Redis here keeps nothing on disk, so the
messages are lost; the TriageRun rows in the database are what the beat sweep re-sends."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from consult_api.dicom.models import Study
from consult_api.triage import service
from models.registry import ModelRegistry
from tests.conftest import Actors, Network, free_port, reachable
from tests.consult_api.triage.conftest import (
    classifier_onnx,
    ct_card,
    install,
    producer,
    wait_for,
    worker_env,
)
from tests.consult_api.triage.test_triage_e2e import ct_files, findings_of, submitted_case, upload

pytestmark = pytest.mark.integration


class PrivateRedis:
    """A Redis server of the test's own, on a free loopback port, keeping nothing on disk.

    Restarting the machine's shared Redis would take it away from every other test (and from a
    CI run that found it left down): the test restarts a server it owns instead.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _pings(self.url), timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as abrupt as a crash: nothing is saved
            self.process.wait(timeout=20)
        wait_for(lambda: not reachable("127.0.0.1", self.port), timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.exceptions.ConnectionError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: cannot run a Redis of the test's own")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_messages_lost_in_a_redis_restart_are_sent_again(
    private_redis: PrivateRedis,
    client: TestClient,
    as_: Actors,
    network: Network,
    registry: ModelRegistry,
    workers: Any,
    settings: Any,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    redis_url = private_redis.url
    install(registry, ct_card(), classifier_onnx(tmp_path / "cls.onnx"))
    case_id = submitted_case(client, as_, network)
    upload(client, as_, case_id, ct_files(tmp_path / "ct", seed=7))
    with session_factory.begin() as session:
        session.execute(update(Study).values(last_instance_at=Study.created_at))
        planned = service.check_studies(session, registry.active_cards(), quiet_seconds=0)
    assert len(planned) == 1
    app = producer(worker_env(settings, registry, HOICHAN_BROKER_URL=redis_url))
    ((run_id, _queue),) = planned  # check_studies stamped it as sent: now really send it
    app.send("triage.run_series", run_id)  # queued in Redis, no worker yet
    assert redis.Redis.from_url(redis_url).dbsize() > 0

    private_redis.restart()
    assert redis.Redis.from_url(redis_url).dbsize() == 0  # the message is gone

    time.sleep(1.2)  # older than the requeue age below
    procs = workers(HOICHAN_BROKER_URL=redis_url, HOICHAN_TRIAGE_REQUEUE_SECONDS="1")
    procs.start()
    assert len(wait_for(lambda: findings_of(client, as_, case_id), timeout=60)) == 1
    time.sleep(2)
    assert len(findings_of(client, as_, case_id)) == 1  # sent again once, triaged once
