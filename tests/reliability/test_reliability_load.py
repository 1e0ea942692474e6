"""The load benchmark, scaled down for CI: concurrent STOW-RS into uvicorn with 2 workers and
C-STORE into a DIMSE listener process, on one database (every instance stored once, bytes intact,
counters exact), then worklist queries over a bulk-loaded
database. ``HOICHAN_LOAD_SCALE`` multiplies the sizes (10 for a heavier run); the full-size run
is ``python -m benchmarks.load.run``."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks.load.run import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCALE = float(os.environ.get("HOICHAN_LOAD_SCALE", "1"))


def test_concurrent_stow_cstore_and_worklist_under_load() -> None:
    args = argparse.Namespace(
        workers=2,
        instances=int(200 * SCALE),
        stow_clients=20,
        batch=10,
        cases=int(500 * SCALE),
        bulk_instances=int(5000 * SCALE),
        users=20,
        queries=int(200 * SCALE),
        cstore_associations=5,
        cstore_share=0.2,
        think_ms=100,
    )
    result = run(args)
    print(result)
    ingest = result["ingest"]
    assert ingest["stow"]["error_count"] == 0, ingest["stow"]["errors"]
    assert ingest["cstore"]["error_count"] == 0, ingest["cstore"]["errors"]
    assert ingest["stored_by_door"] == {"stow": args.instances * 4 // 5, "dimse": args.instances // 5}
    integrity = ingest["integrity"]
    assert integrity == {
        "stored": args.instances,
        "duplicates": 0,
        "missing": 0,
        "corrupt_blobs": 0,
        "study_counters": args.instances,
    }
    assert result["worklist"]["non_200"] == 0
    assert result["worklist_saturation"]["non_200"] == 0
    assert result["db_instances"] == args.instances + args.bulk_instances
