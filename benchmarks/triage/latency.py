"""Upload -> finding latency and triage throughput of the embedded default (``hoichan serve``).

    python -m benchmarks.triage.latency [--ct-slices 100] [--ct-size 512] [--slide-size 8192]
                                        [--repeats 5] [--studies 6] [--workers 1,2]

Starts ``hoichan serve`` as a subprocess (SQLite, filesystem broker, one embedded worker with beat)
with short ``HOICHAN_STUDY_STABLE_SECONDS`` and ``HOICHAN_TRIAGE_POLL_SECONDS``, builds a referral
network over HTTP and then, through the public API only:

* **latency**: a CT series (STOW-RS, ``--ct-slices`` slices) and a synthetic H&E slide (tus) are
  uploaded to fresh cases, ``--repeats`` times each, one at a time; the time from the first upload
  byte to the first finding on the case (or to the end of its runs, if none is above
  threshold) is recorded (p50 / p95). It includes the study-complete
  quiet period and the beat period, which dominate on small inputs: they are printed next to it.
* **throughput**: ``--studies`` CT studies are uploaded back to back and the clock stops when the
  last one has a finding; studies/hour for each ``HOICHAN_WORKER_CONCURRENCY`` in ``--workers``
  (a fresh server each, since the worker pool size is read when the worker starts).

The shipped H&E demo card restricts its stain and the service routes slides with the stain unknown,
so a stain-agnostic copy of the demo tile model (``bench-tiles``) is registered for the slide runs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from consult_api.triage.cli import stow
from datasets.synthetic.ct import generate_ct_case, write_ct_series
from datasets.synthetic.slides import generate_slide
from models.card import ModelCard, load_card
from models.demo import DEMO_ROOT, install_demo_models
from models.registry import ModelRegistry

ADMIN_PASSWORD = secrets.token_urlsafe(18)
PASSWORD = secrets.token_urlsafe(18)
TILES = "demo-he-tumour-tiles"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_registry(root: Path) -> None:
    """Demo models, plus a stain-agnostic copy of the tile model so unlabelled slides route to it."""
    registry = ModelRegistry(root)
    install_demo_models(registry)
    source = next(DEMO_ROOT.glob(f"{TILES}/*/card.json"))
    data = load_card(source).model_dump(mode="json")
    data["name"] = "bench-tiles"
    data["serves"]["stains"] = []
    card = ModelCard.model_validate(data)
    if not registry.list_models(card.name):
        registry.register(card, source.parent / "model.onnx")
        registry.promote(card.name, card.version)


@contextmanager
def server(work: Path, concurrency: int, stable: float, poll: float) -> Iterator[str]:
    """``hoichan serve`` in ``work`` with a fresh data folder; yields its base URL."""
    port = _free_port()
    data = work / f"var-{concurrency}-{time.monotonic_ns()}"
    prepare_registry(data / "models")
    env = {
        **os.environ,
        "HOICHAN_DATA_DIR": str(data),
        "HOICHAN_MODELS_DIR": str(data / "models"),
        "HOICHAN_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "HOICHAN_DIMSE_PORT": str(_free_port()),
        "HOICHAN_STUDY_STABLE_SECONDS": str(stable),
        "HOICHAN_TRIAGE_POLL_SECONDS": str(poll),
        "HOICHAN_WORKER_CONCURRENCY": str(concurrency),
        "HOICHAN_LOG_LEVEL": "WARNING",
    }
    env.pop("HOICHAN_DATABASE_URL", None)
    env.pop("HOICHAN_BROKER_URL", None)
    log = (work / f"server-{concurrency}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "consult_api.cli", "serve", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited; see {log.name}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("server not ready in 120 s")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@dataclass
class Network:
    http: httpx.Client
    central_id: str
    referrer: dict[str, str]


def build_network(base: str) -> Network:
    """Two facilities, a referral link and a referrer at the district hospital."""
    http = httpx.Client(base_url=base, timeout=120)
    token = http.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    token.raise_for_status()
    admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
    ids = {}
    for code, tier in (("CENTRAL", "central"), ("DISTRICT", "district")):
        made = http.post("/api/v1/facilities", json={"code": code, "name": code, "tier": tier}, headers=admin)
        made.raise_for_status()
        ids[code] = made.json()["id"]
    http.put(
        f"/api/v1/facilities/{ids['DISTRICT']}/referrals",
        json={"facility_ids": [ids["CENTRAL"]]},
        headers=admin,
    ).raise_for_status()
    user = {
        "username": "referrer",
        "full_name": "Referrer",
        "password": PASSWORD,
        "facility_id": ids["DISTRICT"],
        "roles": ["referrer"],
    }
    http.post("/api/v1/users", json=user, headers=admin).raise_for_status()
    token = http.post("/api/v1/auth/token", data={"username": "referrer", "password": PASSWORD})
    token.raise_for_status()
    return Network(http, ids["CENTRAL"], {"Authorization": f"Bearer {token.json()['access_token']}"})


def new_case(net: Network, kind: str) -> str:
    body = {
        "kind": kind,
        "target_facility_id": net.central_id,
        "clinical_question": "benchmark",
        "patient": {"identifier": f"B-{time.monotonic_ns()}", "name": "Bench Patient"},
    }
    case = net.http.post("/api/v1/cases", json=body, headers=net.referrer)
    case.raise_for_status()
    case_id: str = case.json()["id"]
    net.http.post(
        f"/api/v1/cases/{case_id}/status", json={"status": "submitted"}, headers=net.referrer
    ).raise_for_status()
    return case_id


def upload_ct(net: Network, case_id: str, paths: list[Path]) -> None:
    net.http.headers.update(net.referrer)
    stow(net.http, case_id, paths, batch=50)


def upload_slide(net: Network, case_id: str, path: Path, chunk: int = 16 << 20) -> None:
    """tus: create, then PATCH chunks with sha256 checksums (as the viewer's uploader does)."""
    size = path.stat().st_size
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"filename": path.name, "case_id": case_id}.items()
    )
    tus = {"Tus-Resumable": "1.0.0"}
    created = net.http.post(
        "/uploads", headers={**net.referrer, **tus, "Upload-Length": str(size), "Upload-Metadata": meta}
    )
    created.raise_for_status()
    url, offset = created.headers["Location"], 0
    with path.open("rb") as fh:
        while offset < size:
            data = fh.read(chunk)
            digest = "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()
            sent = net.http.patch(
                url,
                content=data,
                headers={
                    **net.referrer,
                    **tus,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Checksum": digest,
                },
            )
            sent.raise_for_status()
            offset = int(sent.headers["Upload-Offset"])


def wait_result(
    net: Network, case_id: str, timeout: float = 900, interval: float = 0.05
) -> tuple[float, bool]:
    """When the case first has a finding, or all its triage runs ended without one; raises on failure.

    A run with no finding above the report threshold is still a triage result (the timeline says
    so), so it ends the wait too; the flag says which it was.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Runs first, findings second: a run that ends between the two reads still counts its finding.
        runs = net.http.get(f"/api/v1/cases/{case_id}/triage", headers=net.referrer).json()
        if net.http.get(f"/api/v1/cases/{case_id}/findings", headers=net.referrer).json():
            return time.monotonic(), True
        failed = [r for r in runs if r["state"] == "failed"]
        if failed:
            raise RuntimeError(f"triage failed: {failed[0]['error'][:300]}")
        if runs and all(r["state"] == "done" for r in runs):
            return time.monotonic(), False
        time.sleep(interval)
    raise TimeoutError(f"no triage result on case {case_id} in {timeout} s")


def ct_volume(slices: int, size: int, seed: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A chest CT phantom with lesions drawn like the demo model's training data (so it finds them)."""
    spacing = (2.5, 358.0 / size, 358.0 / size)
    case = generate_ct_case(
        np.random.default_rng(seed),
        shape=(slices, size, size),
        spacing_mm=spacing,
        n_lesions=3,
        lesion_radius_mm=(12.0, 20.0),
        lung_lesion_hu=(-150.0, 60.0),
        liver_contrast_hu=(150.0, 300.0),
    )
    return case.volume_hu, spacing


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50={percentile(values, 50):.2f} s p95={percentile(values, 95):.2f} s "
        f"min={min(values):.2f} max={max(values):.2f} mean={statistics.fmean(values):.2f}"
    )


def measure_latency(args: argparse.Namespace, work: Path) -> None:
    volume, spacing = ct_volume(args.ct_slices, args.ct_size, seed=5)
    slide = generate_slide(
        np.random.default_rng(7), work / "slide", width=args.slide_size, height=args.slide_size
    )
    print(
        f"slide {args.slide_size}x{args.slide_size}: {slide.slide.path.stat().st_size / 1e6:.1f} MB",
        flush=True,
    )
    with server(work, 1, args.stable, args.poll) as base:
        net = build_network(base)
        ct_lat, ct_up, sl_lat, sl_up = [], [], [], []
        for i in range(args.repeats):
            series = write_ct_series(volume, work / f"ct-lat-{i}", spacing_mm=spacing, uid_seed=f"lat-{i}")
            case_id = new_case(net, "imaging")
            t0 = time.monotonic()
            upload_ct(net, case_id, list(series.paths))
            t1 = time.monotonic()
            done, found = wait_result(net, case_id)
            ct_lat.append(done - t0)
            ct_up.append(t1 - t0)
            print(
                f"  CT #{i}: upload {t1 - t0:.2f} s, upload->result {ct_lat[-1]:.2f} s, finding={found}",
                flush=True,
            )
        for i in range(args.repeats):
            case_id = new_case(net, "pathology")
            t0 = time.monotonic()
            upload_slide(net, case_id, slide.slide.path)
            t1 = time.monotonic()
            done, found = wait_result(net, case_id)
            sl_lat.append(done - t0)
            sl_up.append(t1 - t0)
            print(
                f"  slide #{i}: upload {t1 - t0:.2f} s, upload->result {sl_lat[-1]:.2f} s, finding={found}",
                flush=True,
            )
    print(_summary(f"CT {args.ct_slices}x{args.ct_size}x{args.ct_size} upload->result", ct_lat))
    print(_summary("CT upload (STOW-RS) alone", ct_up))
    print(_summary(f"slide {args.slide_size}^2 upload->result", sl_lat))
    print(_summary("slide upload (tus) alone", sl_up))


def measure_throughput(args: argparse.Namespace, work: Path, concurrency: int) -> float:
    volume, spacing = ct_volume(args.ct_slices, args.ct_size, seed=9)
    series = [
        write_ct_series(
            volume, work / f"ct-tp{concurrency}-{i}", spacing_mm=spacing, uid_seed=f"tp{concurrency}-{i}"
        )
        for i in range(args.studies)
    ]
    with server(work, concurrency, args.stable, args.poll) as base:
        net = build_network(base)
        cases = [new_case(net, "imaging") for _ in series]
        t0 = time.monotonic()
        for case_id, s in zip(cases, series, strict=True):
            upload_ct(net, case_id, list(s.paths))
        uploaded = time.monotonic()
        end = max(wait_result(net, case_id)[0] for case_id in cases)
    elapsed = end - t0
    rate = args.studies / elapsed * 3600
    print(
        f"throughput, {concurrency} worker process(es): {args.studies} studies in {elapsed:.1f} s "
        f"(uploads {uploaded - t0:.1f} s) = {rate:.0f} studies/hour",
        flush=True,
    )
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ct-slices", type=int, default=100)
    parser.add_argument("--ct-size", type=int, default=512)
    parser.add_argument("--slide-size", type=int, default=8192, help="level-0 side (the issue asks 20000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--studies", type=int, default=6, help="CT studies per throughput run")
    parser.add_argument("--workers", default="1,2", help="HOICHAN_WORKER_CONCURRENCY values")
    parser.add_argument("--stable", type=float, default=1.0, help="HOICHAN_STUDY_STABLE_SECONDS")
    parser.add_argument("--poll", type=float, default=0.5, help="HOICHAN_TRIAGE_POLL_SECONDS")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"embedded default; study stable {args.stable} s, triage poll {args.poll} s, cpus {os.cpu_count()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="hoichan-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_latency:
            measure_latency(args, work)
        if not args.skip_throughput:
            for n in (int(v) for v in args.workers.split(",")):
                measure_throughput(args, work, n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
