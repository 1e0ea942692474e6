"""Faults against a real server process: disk full, kill -9 mid-STOW, PostgreSQL restart.

Each one checks that nothing is lost, nothing is duplicated, and no blob is corrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pytest
from pydicom.uid import generate_uid

from datasets.synthetic.ct import write_ct_series
from tests.conftest import free_port
from tests.reliability.live import LiveServer, build_network

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BOUNDARY = "fault-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def ct_instances(folder: Path, count: int, size: int = 64, seed: int = 1) -> list[bytes]:
    slices = np.random.default_rng(seed).normal(40, 20, size=(count, size, size)).astype(np.int16)
    write_ct_series(slices, folder, spacing_mm=(2.5, 0.7, 0.7), series_uid=str(generate_uid()))
    return [p.read_bytes() for p in sorted(folder.rglob("*.dcm"))]


def part(data: bytes) -> bytes:
    return f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"


def stow_body(instances: list[bytes]) -> bytes:
    return b"".join(part(i) for i in instances) + f"--{BOUNDARY}--\r\n".encode()


def blobs_are_sound(blob_dir: Path) -> int:
    """Every published blob's bytes hash to its name; returns how many there are."""
    count = 0
    for path in blob_dir.rglob("*"):
        if path.is_file() and path.parent.name != "tmp" and len(path.name) == 64:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"corrupt blob {path}"
            count += 1
    return count


def stored_instances(http: httpx.Client, headers: dict[str, str], study_uid: str) -> list[str]:
    response = http.get(f"/dicom-web/studies/{study_uid}/instances", headers=headers)
    if response.status_code == 204 or not response.content:
        return []
    assert response.status_code == 200, response.text
    return [item["00080018"]["Value"][0] for item in response.json()]


def study_uid_of(instances: list[bytes]) -> str:
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(instances[0]), stop_before_pixels=True).StudyInstanceUID)


def checksums_match(http: httpx.Client, headers: dict[str, str], instances: list[bytes]) -> None:
    """Retrieve every instance and compare its pixel bytes with what was sent."""
    import io

    import pydicom

    for data in instances:
        sent = pydicom.dcmread(io.BytesIO(data))
        url = (
            f"/dicom-web/studies/{sent.StudyInstanceUID}/series/{sent.SeriesInstanceUID}"
            f"/instances/{sent.SOPInstanceUID}"
        )
        response = http.get(url, headers={**headers, "Accept": 'multipart/related; type="application/dicom"'})
        assert response.status_code == 200, response.text
        assert sent.PixelData in response.content, f"instance {sent.SOPInstanceUID} changed"


# --------------------------------------------------------------------------------------- disk full


@pytest.fixture
def tiny_blob_store(tmp_path: Path) -> Iterator[Path]:
    blobs = tmp_path / "var" / "blobs"
    blobs.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(blobs)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield blobs
    finally:
        subprocess.run(["umount", "-l", str(blobs)], check=False)


def test_disk_full_is_507_and_leaves_no_corrupt_blob(tmp_path: Path, tiny_blob_store: Path) -> None:
    big = ct_instances(tmp_path / "big", count=6, size=512, seed=2)  # ~3 MB > the 2 MB store
    small = ct_instances(tmp_path / "small", count=2, size=64, seed=3)
    server = LiveServer(tmp_path, {"HOICHAN_DIMSE_ENABLED": "false"}).start()
    try:
        with server.client() as http:
            net = build_network(http)
            ref = net["ref"]
            full = http.post(
                "/dicom-web/studies", content=stow_body(big), headers={**ref, "Content-Type": STOW_TYPE}
            )
            assert full.status_code == 507, full.text
            assert full.headers["content-type"].startswith("application/problem+json")
            assert "storage" in full.json()["title"].lower()
            assert stored_instances(http, ref, study_uid_of(big)) == []
            assert list((tiny_blob_store / "tmp").iterdir()) == [], "temp files left behind"
            blobs_are_sound(tiny_blob_store)
            # Space is back: a small study is stored whole.
            ok = http.post(
                "/dicom-web/studies", content=stow_body(small), headers={**ref, "Content-Type": STOW_TYPE}
            )
            assert ok.status_code == 200, ok.text
            assert len(stored_instances(http, ref, study_uid_of(small))) == 2
            assert blobs_are_sound(tiny_blob_store) == 2
            assert http.get("/readyz").status_code == 200
    finally:
        server.stop()


# ----------------------------------------------------------------------------- kill -9 mid-STOW


def test_kill9_during_stow_then_resend_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    instances = ct_instances(tmp_path / "ct", count=20, size=128, seed=4)
    server = LiveServer(tmp_path, {"HOICHAN_DIMSE_ENABLED": "false"}).start()
    try:
        with server.client() as http:
            net = build_network(http)
        ref = net["ref"]
        sent_parts, killed = threading.Event(), threading.Event()

        def slow_body() -> Iterator[bytes]:
            for index, data in enumerate(instances):
                yield part(data)
                if index == 9:
                    sent_parts.set()
                    killed.wait(30)  # the server dies while it waits for the rest
            yield f"--{BOUNDARY}--\r\n".encode()

        outcome: list[object] = []

        def send() -> None:
            try:
                with httpx.Client(base_url=server.base, timeout=60) as http:
                    outcome.append(
                        http.post(
                            "/dicom-web/studies",
                            content=slow_body(),
                            headers={**ref, "Content-Type": STOW_TYPE},
                        )
                    )
            except httpx.HTTPError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert sent_parts.wait(30)
        time.sleep(0.5)
        server.kill9()
        killed.set()
        sender.join(40)
        assert outcome and isinstance(outcome[0], httpx.HTTPError), outcome  # the client saw it fail
        server.start()
        with server.client() as http:
            before = stored_instances(http, ref, study_uid_of(instances))
            assert before == [], "a half-received STOW request stored instances"
            # The client retries the whole request, twice (a retry after a lost response, too).
            for _ in range(2):
                again = http.post(
                    "/dicom-web/studies",
                    content=stow_body(instances),
                    headers={**ref, "Content-Type": STOW_TYPE},
                )
                assert again.status_code == 200, again.text
            stored = stored_instances(http, ref, study_uid_of(instances))
            assert len(stored) == len(set(stored)) == len(instances)
            checksums_match(http, ref, instances)
        assert blobs_are_sound(tmp_path / "var" / "blobs") == len(instances)
    finally:
        server.stop()


# ----------------------------------------------------------------------------- kill -9 mid-C-STORE


def test_kill9_after_cstore_answers_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    """Acknowledged means durable: instances answered Success but not yet indexed survive kill -9.

    The indexer is told to linger for a minute, so when the process dies every answered instance is
    only in the spool; the next start must replay all of them, and the modality's re-send of the
    whole series afterwards must change nothing.
    """
    import io

    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    instances = ct_instances(tmp_path / "ct", count=12, size=96, seed=9)
    server = LiveServer(tmp_path, {"HOICHAN_DIMSE_INDEX_LINGER_SECONDS": "60"}).start()
    dimse_port = int(server.env["HOICHAN_DIMSE_PORT"])
    try:
        with server.client() as http:
            net = build_network(http)
            admin, district = cast(dict[str, str], net["admin"]), cast(dict[str, str], net["district"])
            node = http.post(
                f"/api/v1/facilities/{district['id']}/dicom-nodes",
                json={"ae_title": "CT_D1", "may_store": True, "may_query": False},
                headers=admin,
            )
            assert node.status_code == 201, node.text
        ae = AE(ae_title="CT_D1")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", dimse_port, ae_title="HOICHAN")
        assert assoc.is_established
        statuses = [assoc.send_c_store(pydicom.dcmread(io.BytesIO(data))).Status for data in instances]
        assert statuses == [0x0000] * len(instances)
        server.kill9()  # before the release: nothing has been indexed yet
        assoc.abort()

        server.env["HOICHAN_DIMSE_INDEX_LINGER_SECONDS"] = "0.05"
        server.start()
        ref = cast(dict[str, str], net["ref"])
        study_uid = study_uid_of(instances)
        with server.client() as http:
            deadline = time.monotonic() + 30
            while (
                len(stored_instances(http, ref, study_uid)) < len(instances) and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            assert len(stored_instances(http, ref, study_uid)) == len(instances)
            checksums_match(http, ref, instances)
        again = ae.associate("127.0.0.1", dimse_port, ae_title="HOICHAN")
        assert [again.send_c_store(pydicom.dcmread(io.BytesIO(d))).Status for d in instances] == [0] * 12
        again.release()
        with server.client() as http:
            stored = stored_instances(http, ref, study_uid)
            assert len(stored) == len(set(stored)) == len(instances)
        assert blobs_are_sound(tmp_path / "var" / "blobs") == len(instances)
    finally:
        server.stop()


# ------------------------------------------------------------------------- PostgreSQL restart


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL server binaries (Debian keeps them off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, on a free loopback port, in a temporary folder.

    Restarting the machine's PostgreSQL would pull it from under every other test (and from a CI
    run that found it left down): the test restarts a cluster it owns instead. The server refuses
    to run as root, so as root it runs as the ``postgres`` user.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="hoichan-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [*self._as_owner, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(command, capture_output=True, check=False, timeout=timeout)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=on"
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", action, "-D", str(self.data), "-l", log, "-o", options, "-w", *extra)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")


@pytest.fixture
def pg_database() -> Iterator[PrivatePostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed here")
    cluster = PrivatePostgres(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(AssertionError, OSError, subprocess.SubprocessError):
            cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def test_postgres_restart_during_writes(tmp_path: Path, pg_database: PrivatePostgres) -> None:
    server = LiveServer(
        tmp_path, {"HOICHAN_DIMSE_ENABLED": "false", "HOICHAN_DATABASE_URL": pg_database.url}
    ).start()
    try:
        with server.client(timeout=30) as http:
            net = build_network(http)
            ref, central = net["ref"], net["central"]["id"]  # type: ignore[index]
            results: list[tuple[str, int]] = []
            stop = threading.Event()

            def writer(worker: int) -> None:
                with httpx.Client(base_url=server.base, timeout=30) as client:
                    n = 0
                    while not stop.is_set():
                        marker = f"pg-restart-{worker}-{n}"
                        try:
                            response = client.post(
                                "/api/v1/cases",
                                json={
                                    "kind": "advice",
                                    "target_facility_id": central,
                                    "clinical_question": marker,
                                    "patient": {"identifier": f"P-{worker}-{n}", "name": "Restart Test"},
                                },
                                headers=ref,
                            )
                            results.append((marker, response.status_code))
                            if response.status_code >= 500:
                                assert response.headers["content-type"].startswith("application/problem+json")
                        except httpx.TransportError:
                            results.append((marker, 0))
                        n += 1
                        time.sleep(0.02)

            threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(3)]
            for thread in threads:
                thread.start()
            time.sleep(1.5)
            pg_database.restart()
            time.sleep(2.5)
            stop.set()
            for thread in threads:
                thread.join(40)
            statuses = [s for _, s in results]
            failed = [s for s in statuses if s != 201]
            assert set(failed) <= {503, 0}, f"unclean failures: {sorted(set(failed))}"
            assert statuses[-1] == 201 and statuses.count(201) > 10
            # After the restart: every 201 case exists exactly once; no failed request left a case.
            questions: list[str] = []
            while True:
                listed = http.get(
                    "/api/v1/cases", params={"limit": 200, "offset": len(questions)}, headers=ref
                )
                assert listed.status_code == 200, listed.text
                body = listed.json()
                items = body["items"] if isinstance(body, dict) else body
                questions += [c["clinical_question"] for c in items]
                if len(items) < 200:
                    break
            created = {m for m, s in results if s == 201}
            assert len(questions) == len(set(questions))
            assert created <= set(questions)
            assert http.get("/readyz").status_code == 200
            print(
                f"postgres restart: {len(results)} writes, {len(failed)} refused during the restart "
                f"({sorted(set(failed))})"
            )
    finally:
        server.stop()
