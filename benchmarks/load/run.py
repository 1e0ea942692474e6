"""Load: concurrent STOW-RS into uvicorn with several workers, then worklist queries at scale.

    python -m benchmarks.load.run                      # full: 10,000 instances, 10k cases, 100k instances
    python -m benchmarks.load.run --instances 400 --cases 500 --bulk-instances 5000 --users 10   # CI-sized

Uses PostgreSQL on 127.0.0.1:5432 when reachable (a fresh database, dropped afterwards), else SQLite.
Checks every instance was stored exactly once with the bytes sent (sha256), prints p50/p99.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.uid import generate_uid
from sqlalchemy import func, insert, select, text

from consult_api import migrate
from consult_api.cases.models import Case, Patient
from consult_api.cli import prepare_database
from consult_api.config import Settings
from consult_api.db import create_db_engine
from consult_api.dicom.models import Instance, Series, Study
from datasets.synthetic.ct import write_ct_series
from tests.reliability.live import ADMIN_PASSWORD, LiveServer, build_network

BOUNDARY = "load-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p99_ms": round(percentile(values, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else 0.0,
    }


def fresh_database(workdir: Path) -> tuple[str, Any]:
    """(url, cleanup): a new PostgreSQL database when one listens, else a SQLite file."""
    from tests.conftest import reachable

    if reachable("127.0.0.1", 5432):
        name = f"hoichan_load_{uuid.uuid4().hex[:8]}"
        admin = create_db_engine(f"{PG}/postgres").execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        return f"{PG}/{name}", drop
    return f"sqlite:///{workdir / 'load.db'}", lambda: None


def make_instances(folder: Path, count: int, per_series: int = 50) -> list[bytes]:
    rng = np.random.default_rng(11)
    out: list[bytes] = []
    for index in range(0, count, per_series):
        n = min(per_series, count - index)
        series_dir = folder / f"s{index}"
        slices = rng.normal(40, 20, size=(n, 64, 64)).astype(np.int16)
        write_ct_series(
            slices,
            series_dir,
            spacing_mm=(2.5, 0.7, 0.7),
            series_uid=str(generate_uid()),
            patient_id=f"L{index}",
        )
        out += [p.read_bytes() for p in sorted(series_dir.rglob("*.dcm"))]
    return out


def body(parts: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


def stow_phase(
    base: str, headers: dict[str, str], instances: list[bytes], clients: int, batch: int
) -> dict[str, Any]:
    batches = [instances[i : i + batch] for i in range(0, len(instances), batch)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(share: list[list[bytes]]) -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            for parts in share:
                started = time.perf_counter()
                response = http.post(
                    "/dicom-web/studies", content=body(parts), headers={**headers, "Content-Type": STOW_TYPE}
                )
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [batches[i::clients] for i in range(clients)]))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "instances": len(instances),
        "per_request": batch,
        "errors": errors[:5],
        "error_count": len(errors),
        "instances_per_s": round(len(instances) / wall, 1),
        "request_latency": summary(latencies),
    }


def verify_stored(url: str, blob_dir: Path, instances: list[bytes]) -> dict[str, Any]:
    engine = create_db_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(Instance.sop_instance_uid, Instance.blob_sha256)).all()
        counted = conn.scalar(select(func.sum(Study.number_of_instances))) or 0
    engine.dispose()
    sent = {hashlib.sha256(i).hexdigest() for i in instances}
    stored = [sha for _, sha in rows]
    uids = [uid for uid, _ in rows]
    corrupt = 0
    for sha in stored:
        path = blob_dir / sha[:2] / sha[2:4] / sha
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            corrupt += 1
    return {
        "stored": len(rows),
        "duplicates": len(uids) - len(set(uids)),
        "missing": len(sent - set(stored)),
        "corrupt_blobs": corrupt,
        "study_counters": int(counted),
    }


def bulk_insert(url: str, facility_from: str, facility_to: str, cases: int, instances: int) -> float:
    """10k cases, one study each, 100k instances, with SQLAlchemy core (what the worklist sees)."""
    started = time.perf_counter()
    engine = create_db_engine(url)
    now = datetime.now(UTC)
    per_case = max(instances // max(cases, 1), 1)
    with engine.begin() as conn:
        for start in range(0, cases, 1000):
            chunk = range(start, min(start + 1000, cases))
            patients = [
                {
                    "id": str(uuid.uuid4()),
                    "issuer_facility_id": facility_from,
                    "identifier": f"BULK-{i}",
                    "name": f"Bulk Patient {i}",
                    "sex": "U",
                    "created_at": now,
                }
                for i in chunk
            ]
            conn.execute(insert(Patient), patients)
            rows, studies, series_rows, inst = [], [], [], []
            for i, patient in zip(chunk, patients, strict=True):
                case_id, study_id, series_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
                priority = ("critical", "urgent", "routine")[i % 3]
                rows.append(
                    {
                        "id": case_id,
                        "kind": "imaging",
                        "status": "submitted",
                        "priority": priority,
                        "priority_rank": i % 3,
                        "urgent": i % 7 == 0,
                        "clinical_question": f"bulk case {i}",
                        "clinical_notes": "",
                        "deadline": now + timedelta(hours=i % 72),
                        "patient_id": patient["id"],
                        "referring_facility_id": facility_from,
                        "target_facility_id": facility_to,
                        "created_by": "load",
                        "created_at": now,
                        "updated_at": now,
                        "submitted_at": now,
                        "alerts": [],
                    }
                )
                study_uid = f"2.25.{uuid.uuid4().int}"
                studies.append(
                    {
                        "id": study_id,
                        "study_instance_uid": study_uid[:64],
                        "facility_id": facility_from,
                        "case_id": case_id,
                        "patient_id": f"BULK-{i}",
                        "patient_name": "BULK^PATIENT",
                        "modalities": ["CT"],
                        "number_of_series": 1,
                        "number_of_instances": per_case,
                        "created_at": now,
                        "last_instance_at": now,
                    }
                )
                series_rows.append(
                    {
                        "id": series_id,
                        "series_instance_uid": f"2.25.{uuid.uuid4().int}"[:64],
                        "study_id": study_id,
                        "modality": "CT",
                        "number_of_instances": per_case,
                        "created_at": now,
                    }
                )
                for n in range(per_case):
                    inst.append(
                        {
                            "id": str(uuid.uuid4()),
                            "sop_instance_uid": f"2.25.{uuid.uuid4().int}"[:64],
                            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                            "series_id": series_id,
                            "instance_number": n,
                            "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                            "blob_sha256": "0" * 64,
                            "size": 0,
                            "number_of_frames": 1,
                            "dicom_json": {},
                            "received_via": "stow",
                            "created_at": now,
                        }
                    )
            conn.execute(insert(Case), rows)
            conn.execute(insert(Study), studies)
            conn.execute(insert(Series), series_rows)
            conn.execute(insert(Instance), inst)
        if url.startswith("postgresql"):
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def worklist_phase(base: str, headers: dict[str, str], users: int, queries: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    params_cycle = [
        {"limit": 50},
        {"limit": 50, "offset": 500},
        {"status": "submitted", "limit": 50},
        {"q": "Bulk Patient 12", "limit": 50},
    ]

    def user(index: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for n in range(queries // users):
                started = time.perf_counter()
                response = http.get(
                    "/api/v1/cases", params=params_cycle[(index + n) % len(params_cycle)], headers=headers
                )
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses.append(response.status_code)

    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    wall = time.perf_counter() - started
    return {
        "users": users,
        "queries": len(latencies),
        "non_200": sum(s != 200 for s in statuses),
        "queries_per_s": round(len(latencies) / wall, 1),
        "latency": summary(latencies),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hoichan-load-"))
    url, cleanup = fresh_database(workdir)
    env = {
        "HOICHAN_DATABASE_URL": url,
        "HOICHAN_SECRET_KEY": "load-" + "k" * 40,
        "HOICHAN_DIMSE_ENABLED": "false",
        "HOICHAN_LOG_LEVEL": "WARNING",
        "HOICHAN_BROKER_URL": "memory://",  # enqueueing must not need a broker for this run
        "HOICHAN_LOGIN_MAX_FAILURES_PER_IP": "100000",
    }
    result: dict[str, Any] = {"database": url.split(":")[0], "workers": args.workers}
    server = LiveServer(
        workdir,
        env,
        command=[
            sys.executable,
            "-m",
            "uvicorn",
            "consult_api.app:create_app",
            "--factory",
            "--port",
            "{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
    )
    try:
        migrate.upgrade(url)
        prepare_database(
            Settings(
                data_dir=workdir / "var",
                database_url=url,
                secret_key=env["HOICHAN_SECRET_KEY"],
                bootstrap_admin_password=ADMIN_PASSWORD,
            )
        )
        server.start()
        with server.client() as http:
            net = build_network(http)
        instances = make_instances(workdir / "dicom", args.instances)
        result["stow"] = stow_phase(server.base, net["ref"], instances, args.stow_clients, args.batch)  # type: ignore[arg-type]
        result["stow"]["integrity"] = verify_stored(url, workdir / "var" / "blobs", instances)
        result["bulk_insert_s"] = round(
            bulk_insert(url, net["district"]["id"], net["central"]["id"], args.cases, args.bulk_instances),
            1,  # type: ignore[index]
        )
        result["bulk"] = {"cases": args.cases, "instances": args.bulk_instances}
        result["worklist"] = worklist_phase(server.base, net["rad"], args.users, args.queries)  # type: ignore[arg-type]
        engine = create_db_engine(url)
        with engine.connect() as conn:
            result["db_instances"] = conn.scalar(select(func.count()).select_from(Instance))
        engine.dispose()
    finally:
        server.stop()
        cleanup()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--stow-clients", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10, help="instances per STOW-RS request")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--bulk-instances", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = run(args)
    text_out = json.dumps(result, indent=2)
    print(text_out)
    if args.json:
        args.json.write_text(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
