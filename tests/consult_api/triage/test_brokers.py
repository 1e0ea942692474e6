"""The same worker against Redis and RabbitMQ on loopback (skipped when not reachable)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import reachable
from tests.consult_api.triage.conftest import producer

BROKERS = {
    "redis": ("redis://127.0.0.1:6379/14", 6379),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_worker_consumes_every_queue_from_a_broker_server(broker: str, workers: Any) -> None:
    url, port = BROKERS[broker]
    if not reachable("127.0.0.1", port):
        pytest.skip(f"{broker} not reachable on 127.0.0.1:{port}")
    procs = workers(HOICHAN_BROKER_URL=url)
    app = producer(procs.env)
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
            conn.default_channel.queue_purge(queue.name)
    procs.start(beat=False)
    sweep = app.send_task("triage.sweep", queue="ingest")
    run = app.send_task("triage.run_series", args=["no-such-run"], queue="triage.dicom")
    slide = app.send_task("triage.plan_slide", args=["no-such-slide"], queue="ingest")
    assert sweep.get(timeout=20) == {"resent": 0}
    assert run.get(timeout=20) == {"run_id": "no-such-run", "status": "skipped"}
    assert slide.get(timeout=20) == {"runs": 0}
