"""A Celery app with one no-op task, configured like ``consult_api.worker`` (acks_late, prefetch 1).

Used only by ``broker.py`` to compare the embedded transports; the broker comes from
``BENCH_BROKER_URL`` and options from ``BENCH_BROKER_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

_url = os.environ.get("BENCH_BROKER_URL", "filesystem://")
_folder = Path(os.environ.get("BENCH_BROKER_DIR", "/tmp/bench-broker"))
_poll = float(os.environ.get("BENCH_POLL", "0.1"))
_options: dict[str, object] = {} if _url.startswith("sqla") else {"polling_interval": _poll}
if _url.startswith("sqla"):
    # The SQLAlchemy transport hands every transport option to create_engine: set the class default.
    import kombu.transport.sqlalchemy

    kombu.transport.sqlalchemy.Transport.polling_interval = _poll
if _url.startswith("filesystem"):
    _options |= {
        "data_folder_in": str(_folder),
        "data_folder_out": str(_folder),
        "control_folder": str(_folder / "c"),
    }
app = Celery("bench", broker=_url, set_as_current=False)
app.conf.update(
    broker_transport_options=_options,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
DONE = Path(os.environ.get("BENCH_DONE_FILE", "/tmp/bench-done"))


@app.task(name="bench.noop")
def noop() -> None:
    """One byte appended per task: the producer counts bytes to know how many ran."""
    with DONE.open("ab") as handle:
        handle.write(b"x")
