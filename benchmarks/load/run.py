"""Load: concurrent STOW-RS and C-STORE into Hoichan, then worklist queries at scale.

    python -m benchmarks.load.run    # full: 10,000 instances (2,000 by C-STORE), 10k cases, 100k instances
    python -m benchmarks.load.run --instances 400 --cases 500 --bulk-instances 5000 --users 10  # CI-sized

Two processes share one database and one blob store: uvicorn with several workers (the API) and
``hoichan dimse`` (the DICOM listener). In one timed phase 20 STOW-RS clients and 5 C-STORE
associations (a registered calling AE of the district facility) send the instances at the same
time; ``--cstore-share`` of them (every fifth by default, interleaved, so both doors write into
the same studies) go by C-STORE. Then every instance must be stored exactly once with the bytes
sent: sha256 of the whole file for STOW-RS; for C-STORE, which carries no file meta on the wire
(the listener writes its own), sha256 of the data set after the file meta. Study counters must be
exact. Prints throughput, STOW request and C-STORE per-instance latency p50/p99.

Uses PostgreSQL on 127.0.0.1:5432 when reachable (a fresh database, dropped afterwards), else SQLite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import numpy as np
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from sqlalchemy import func, insert, select, text

from consult_api import migrate
from consult_api.cases.models import Case, Patient
from consult_api.cli import prepare_database
from consult_api.config import Settings
from consult_api.db import create_db_engine
from consult_api.dicom.models import Instance, Series, Study
from datasets.synthetic.ct import write_ct_series
from tests.conftest import reachable
from tests.reliability.live import ADMIN_PASSWORD, LiveServer, build_network

T = TypeVar("T")
BOUNDARY = "load-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
CALLED_AE = "HOICHAN"
CALLING_AE = "LOADSCU"


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


class DimseServer(LiveServer):
    """``hoichan dimse`` beside the API: the same environment, so the same database and blob store.

    Ready when its port accepts a connection (it has no HTTP side).
    """

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(
            workdir,
            {**env, "HOICHAN_DIMSE_HOST": "127.0.0.1", "HOICHAN_DIMSE_AE_TITLE": CALLED_AE},
            command=[sys.executable, "-m", "consult_api.cli", "dimse", "--port", "{port}"],
        )
        self.env["HOICHAN_DIMSE_PORT"] = str(self.port)
        self.log_path = workdir / "dimse.log"

    def ready(self) -> bool:
        """The listener accepts connections (it has no HTTP side)."""
        return reachable("127.0.0.1", self.port)


def make_instances(folder: Path, count: int, per_series: int = 50) -> list[Path]:
    """``count`` 64x64 CT files, 50 to a series (one study each); paths in generation order."""
    rng = np.random.default_rng(11)
    out: list[Path] = []
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
        out += sorted(series_dir.rglob("*.dcm"))
    return out


def split_doors(paths: list[Path], share: float) -> tuple[list[Path], list[Path]]:
    """(STOW-RS, C-STORE): every 1/share-th instance to C-STORE, so both doors fill the same studies."""
    share = min(max(share, 0.0), 1.0)
    cstore = [int((i + 1) * share) > int(i * share) for i in range(len(paths))]
    return [p for p, c in zip(paths, cstore, strict=True) if not c], [
        p for p, c in zip(paths, cstore, strict=True) if c
    ]


def dataset_body(path: Path) -> bytes:
    """The encoded data set after the preamble and file meta: what C-STORE carries on the wire."""
    _, offset = split_dataset(path)
    with path.open("rb") as fp:
        fp.seek(offset)
        return fp.read()


def body(parts: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


def run_clients(client: Callable[[list[T]], None], items: list[T], clients: int) -> float:
    """Deal ``items`` round-robin to ``clients`` threads running ``client``; the wall time of all."""
    started = time.perf_counter()
    if items and clients > 0:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, [items[i::clients] for i in range(clients)]))
    return time.perf_counter() - started


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

    wall = run_clients(client, batches, clients)
    return {
        "clients": clients,
        "instances": len(instances),
        "per_request": batch,
        "errors": errors[:5],
        "error_count": len(errors),
        "instances_per_s": round(len(instances) / wall, 1),
        "request_latency": summary(latencies),
    }


STALL_TIMEOUT_S = 15


def cstore_phase(port: int, paths: list[Path], associations: int) -> dict[str, Any]:
    """One association per client thread, each sending its share file by file (raw, not re-encoded)."""
    # Send the file's encoded data set as it is (no decode/re-encode), as a modality would; this
    # needs an accepted context with exactly the file's transfer syntax, proposed below.
    _config.STORE_SEND_CHUNKED_DATASET = True
    contexts = sorted(
        {
            (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            for meta, _ in map(split_dataset, paths)
        }
    )
    latencies: list[float] = []
    setup: list[float] = []
    errors: list[str] = []
    failed = refused = 0
    lock = threading.Lock()
    resent = 0

    def associate(ae: AE) -> Any:
        nonlocal refused
        started = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE)
        with lock:
            setup.append(time.perf_counter() - started)
            if not assoc.is_established:
                refused += 1
                why = (
                    "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
                )
                errors.append(f"association {why}")
        return assoc if assoc.is_established else None

    def client(share: list[Path]) -> None:
        """Send the share; a response that never comes is sent again on a new association.

        As a modality would: pynetdicom's requestor now and then misses a fast C-STORE-RSP (its
        association thread waits in ``get_msg`` while both ends of the connection sit idle with
        empty queues), so the instance goes again; storing the same bytes twice is idempotent.
        """
        nonlocal failed, resent
        ae = AE(ae_title=CALLING_AE)
        ae.acse_timeout = 60
        ae.dimse_timeout = STALL_TIMEOUT_S
        ae.network_timeout = 120
        for sop_class, syntax in contexts:
            ae.add_requested_context(sop_class, syntax)
        assoc = associate(ae)
        try:
            for n, path in enumerate(share):
                code = None
                for _attempt in range(3):
                    if assoc is None:
                        break
                    started = time.perf_counter()
                    status = assoc.send_c_store(path, msg_id=n % 65535 + 1)
                    elapsed = time.perf_counter() - started
                    code = int(status.Status) if "Status" in status else None
                    if code is not None:
                        with lock:
                            latencies.append(elapsed)
                        break
                    with lock:
                        resent += 1
                    assoc.abort()
                    assoc = associate(ae)
                if code != 0x0000:
                    with lock:
                        failed += 1
                        errors.append("no response" if code is None else f"status 0x{code:04X}")
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()

    wall = run_clients(client, paths, associations)
    return {
        "associations": associations,
        "instances": len(paths),
        "refused_associations": refused,
        "resent_after_client_stall": resent,
        "errors": errors[:5],
        "error_count": failed,
        "instances_per_s": round(len(paths) / wall, 1) if paths else 0.0,
        "instance_latency": summary(latencies),
        "association_setup": summary(setup),
    }


def ingest_phase(
    base: str, headers: dict[str, str], dimse_port: int, paths: list[Path], args: argparse.Namespace
) -> dict[str, Any]:
    """Both doors at the same time: STOW-RS clients and C-STORE associations contend for the database."""
    stow_paths, cstore_paths = split_doors(paths, args.cstore_share)
    stow_bytes = [p.read_bytes() for p in stow_paths]
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        stow = pool.submit(stow_phase, base, headers, stow_bytes, args.stow_clients, args.batch)
        cstore = pool.submit(cstore_phase, dimse_port, cstore_paths, args.cstore_associations)
        result = {"stow": stow.result(), "cstore": cstore.result()}
    wall = time.perf_counter() - started
    return {
        "instances": len(paths),
        "wall_s": round(wall, 1),
        "instances_per_s": round(len(paths) / wall, 1),
        **result,
    }


def verify_stored(
    url: str, blob_dir: Path, instances: list[bytes], cstore_bodies: list[bytes] | None = None
) -> dict[str, Any]:
    """Stored exactly once with the bytes sent.

    ``instances`` are whole files sent by STOW-RS (stored as sent); ``cstore_bodies`` the data sets
    sent by C-STORE, stored behind the listener's own file meta, so compared after the file meta.
    """
    engine = create_db_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(Instance.sop_instance_uid, Instance.blob_sha256)).all()
        counted = conn.scalar(select(func.sum(Study.number_of_instances))) or 0
    engine.dispose()
    sent = {hashlib.sha256(i).hexdigest() for i in instances}
    sent_bodies = {hashlib.sha256(b).hexdigest() for b in cstore_bodies or []}
    stored = [sha for _, sha in rows]
    uids = [uid for uid, _ in rows]
    corrupt = 0
    stored_bodies: set[str] = set()
    for sha in stored:
        path = blob_dir / sha[:2] / sha[2:4] / sha
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            corrupt += 1
        elif sent_bodies:
            stored_bodies.add(hashlib.sha256(dataset_body(path)).hexdigest())
    return {
        "stored": len(rows),
        "duplicates": len(uids) - len(set(uids)),
        "missing": len(sent - set(stored)) + len(sent_bodies - stored_bodies),
        "corrupt_blobs": corrupt,
        "study_counters": int(counted),
    }


def stored_by_door(url: str) -> dict[str, int]:
    engine = create_db_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(Instance.received_via, func.count()).group_by(Instance.received_via)).all()
    engine.dispose()
    return {str(via): int(n) for via, n in rows}


def register_calling_ae(http: httpx.Client, admin: dict[str, str], facility_id: str) -> None:
    """What an operator does for a modality: its AE title may C-STORE for the facility."""
    response = http.post(
        f"/api/v1/facilities/{facility_id}/dicom-nodes",
        json={"ae_title": CALLING_AE, "may_store": True, "may_query": False},
        headers=admin,
    )
    response.raise_for_status()


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


WORKLIST_VIEWS: list[dict[str, Any]] = [
    {"limit": 50},
    {"limit": 50, "offset": 500},
    {"status": "submitted", "limit": 50},
    {"priority": "critical", "limit": 50},
]
"""What a specialist's worklist asks for: the first page, a later page, and two filters."""


def worklist_phase(
    base: str, headers: dict[str, str], users: int, queries: int, *, think_s: float = 0.0
) -> dict[str, Any]:
    """``users`` threads, each asking for ``queries // users`` worklist pages.

    ``think_s`` is the pause between one user's requests (uniformly jittered by +-50 %, so users do
    not march in step): a person reads the page before the next click. With 0 every user fires
    again the moment an answer arrives, which measures saturation (queueing), not what a user waits.
    """
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def user(index: int) -> None:
        jitter = random.Random(index)
        with httpx.Client(base_url=base, timeout=60) as http:
            for n in range(queries // users):
                if think_s:
                    time.sleep(think_s * jitter.uniform(0.5, 1.5))
                started = time.perf_counter()
                response = http.get(
                    "/api/v1/cases", params=WORKLIST_VIEWS[(index + n) % len(WORKLIST_VIEWS)], headers=headers
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
        "think_ms": round(think_s * 1000),
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
    # run() is also called with a bare Namespace (tests/reliability): default to both doors.
    args.cstore_associations = getattr(args, "cstore_associations", 5)
    args.cstore_share = getattr(args, "cstore_share", 0.2)
    args.think_ms = getattr(args, "think_ms", 1000)
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
    dimse = DimseServer(workdir, env)
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
            district = cast(dict[str, Any], net["district"])
            central = cast(dict[str, Any], net["central"])
            register_calling_ae(http, cast(dict[str, str], net["admin"]), district["id"])
        dimse.start()
        paths = make_instances(workdir / "dicom", args.instances)
        ingest = ingest_phase(server.base, cast(dict[str, str], net["ref"]), dimse.port, paths, args)
        stow_paths, cstore_paths = split_doors(paths, args.cstore_share)
        ingest["integrity"] = verify_stored(
            url,
            workdir / "var" / "blobs",
            [p.read_bytes() for p in stow_paths],
            [dataset_body(p) for p in cstore_paths],
        )
        ingest["stored_by_door"] = stored_by_door(url)
        if ingest["cstore"]["error_count"]:
            ingest["cstore"]["dimse_log_tail"] = dimse.log()[-2000:]
        result["ingest"] = ingest
        result["bulk_insert_s"] = round(
            bulk_insert(url, district["id"], central["id"], args.cases, args.bulk_instances), 1
        )
        result["bulk"] = {"cases": args.cases, "instances": args.bulk_instances}
        specialist = cast(dict[str, str], net["rad"])
        result["worklist"] = worklist_phase(
            server.base, specialist, args.users, args.queries, think_s=args.think_ms / 1000
        )
        result["worklist_saturation"] = worklist_phase(server.base, specialist, args.users, args.queries)
        engine = create_db_engine(url)
        with engine.connect() as conn:
            result["db_instances"] = conn.scalar(select(func.count()).select_from(Instance))
        engine.dispose()
    finally:
        dimse.stop()
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
    parser.add_argument("--cstore-associations", type=int, default=5, help="concurrent C-STORE associations")
    parser.add_argument(
        "--cstore-share", type=float, default=0.2, help="fraction of the instances sent by C-STORE (0 to 1)"
    )
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--bulk-instances", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--queries", type=int, default=5_000, help="worklist requests per phase")
    parser.add_argument(
        "--think-ms",
        type=int,
        default=1000,
        help="a user's pause between worklist requests (+-50%%); a second phase runs with none",
    )
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
