"""``hoichan triage PATH...``: batch triage of DICOM folders, zip archives and slide files.

Two modes, one command, because the same person (a site's PACS administrator clearing a backlog, an
ML engineer checking a model version on a local dataset) wants either:

* **local** (default): the pipelines run in this process on the registry's active models, with no
  service, database or broker; results go to ``--out`` as ``results.csv`` (one row per input, model
  and label), ``results.json`` (one record per input and model) and the DICOM SR (and SEG, when the
  model segments) in ``sr/``, the same objects the service would store in the study.
* **server** (``--server URL --api-key KEY --case ID``): the DICOM files are sent by STOW-RS to a
  running service and attached to the case; the service triages them on its own queues exactly as
  for any upload, and this command follows the case's triage runs until they end, then writes the
  findings it got back. Nothing is computed here, so the results are the ones the specialists see.

Zip archives are extracted into a temporary folder with the checks that make an untrusted archive
safe: no absolute or ``..`` member names, no links, bounded member count and uncompressed size
(counted on the bytes actually written, not the sizes the archive declares).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from consult_api.storage import zipsafe

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif"})
DERIVED_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "REG", "RTSTRUCT"})
"""Result objects, never inputs (an SR from an earlier run would otherwise be 'triaged')."""
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_BYTES = 64 * 1024**3
TERMINAL_STATES = frozenset({"done", "failed"})
CSV_FIELDS = (
    "input",
    "kind",
    "study_instance_uid",
    "series_instance_uid",
    "model",
    "status",
    "label",
    "score",
    "priority",
    "finding",
    "slice_index",
    "sop_instance_uid",
    "bbox",
    "sr_file",
    "error",
)


def add_triage_commands(subparsers: Any) -> None:
    """Wire ``hoichan triage`` (called from ``consult_api.cli._add_optional_commands``)."""
    parser = subparsers.add_parser(
        "triage",
        help="batch AI triage of DICOM folders, zips and slides (locally, or through a running service)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("paths", nargs="+", type=Path, help="DICOM folders or files, .zip archives, slides")
    parser.add_argument("--out", type=Path, default=Path("triage-results"), help="results folder")
    parser.add_argument("--registry", type=Path, help="model registry (default: HOICHAN_MODELS_DIR)")
    parser.add_argument("--demo-models", action="store_true", help="install the demo models first")
    parser.add_argument("--stain", help="stain of the slides, for routing (e.g. 'H&E'); unknown by default")
    parser.add_argument("--server", help="base URL of a running Hoichan service (server mode)")
    parser.add_argument("--api-key", help="the facility API key to upload with (server mode)")
    parser.add_argument("--case", dest="case_id", help="the case to attach the studies to (server mode)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="server mode: seconds to wait")
    parser.add_argument("--poll", type=float, default=2.0, help="server mode: seconds between polls")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    parser.set_defaults(handler=cmd_triage)


def cmd_triage(args: argparse.Namespace) -> int:
    if args.server:
        if not (args.api_key and args.case_id):
            print("server mode needs --api-key and --case", file=sys.stderr)
            return 2
        return run_server(args)
    return run_local(args)


# -- inputs -------------------------------------------------------------------------------------------


class UnsafeArchiveError(ValueError):
    """A zip member that would escape the extraction folder or exhaust the disk."""


def safe_extract(
    archive: Path, dest: Path, max_members: int = MAX_ZIP_MEMBERS, max_bytes: int = MAX_ZIP_BYTES
) -> Path:
    """Extract ``archive`` under ``dest`` refusing traversal, links and bombs; returns ``dest``."""
    limits = zipsafe.ZipLimits(max_entries=max_members, max_total_bytes=max_bytes)
    try:
        with zipfile.ZipFile(archive) as zf:
            zipsafe.extract(zf, dest, limits)
    except zipsafe.UnsafeZip as exc:
        raise UnsafeArchiveError(f"{archive}: {exc}") from exc
    return dest


def is_dicom(path: Path) -> bool:
    """Part-10 files only (the ``DICM`` marker): cheap, and what every modality and PACS writes."""
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


@dataclass
class Inputs:
    dicom: list[Path] = field(default_factory=list)
    slides: list[Path] = field(default_factory=list)
    origin: dict[Path, str] = field(default_factory=dict)
    """Extracted file -> what the user named (``archive.zip``), for the results table."""


def _walk(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        yield path


def collect_inputs(paths: Sequence[Path], scratch: Path) -> Inputs:
    """Folders are walked, zips extracted into ``scratch``, files sorted into DICOM and slides."""
    found = Inputs()
    for given in paths:
        if not given.exists():
            raise FileNotFoundError(given)
        for path in _walk(given):
            if zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
                dest = safe_extract(path, Path(tempfile.mkdtemp(dir=scratch)))
                inner = collect_inputs([dest], scratch)
                found.dicom += inner.dicom
                found.slides += inner.slides
                for member in [*inner.dicom, *inner.slides]:
                    found.origin[member] = f"{path}!{member.relative_to(dest)}"
            elif path.suffix.lower() in SLIDE_SUFFIXES and not is_dicom(path):
                found.slides.append(path)
            elif is_dicom(path):
                found.dicom.append(path)
    return found


@dataclass(frozen=True)
class SeriesGroup:
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    paths: tuple[Path, ...]


def group_series(files: Iterable[Path]) -> list[SeriesGroup]:
    """DICOM files by series (headers only), derived objects (SR, SEG, ...) left out."""
    import pydicom

    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.get("Modality", "")).upper() in DERIVED_MODALITIES:
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return [
        SeriesGroup(
            str(items[0][1].StudyInstanceUID),
            uid,
            str(items[0][1].get("Modality", "")),
            tuple(p for p, _ in items),
        )
        for uid, items in groups.items()
    ]


def progress(iterable: Iterable[Any] | None = None, *, total: int | None, desc: str, mode: str) -> Any:
    """A tqdm bar on a terminal (or when asked); a silent pass-through otherwise or without tqdm."""
    enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for the serving install
        enabled = False
    if not enabled:
        return _NoBar(iterable, total)
    return tqdm(iterable, total=total, desc=desc, unit="job", file=sys.stderr, disable=False)


class _NoBar:
    def __init__(self, iterable: Iterable[Any] | None, total: int | None) -> None:
        self.iterable, self.total, self.n = iterable, total, 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable or ())

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, _text: str) -> None:
        pass

    def close(self) -> None:
        pass


# -- local mode -----------------------------------------------------------------------------------------


@dataclass
class JobResult:
    """One model version on one input: the unit of ``results.json``."""

    input: str
    kind: str
    model: str = ""
    status: str = "done"
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    sr_file: str = ""
    seg_file: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class _Job:
    kind: str
    label: str
    card: Any
    series: SeriesGroup | None = None
    slide: Path | None = None


def _finding_dict(finding: Any) -> dict[str, Any]:
    bbox = finding.bbox
    return {
        "label": finding.label,
        "score": round(float(finding.score), 6),
        "priority": finding.priority.value,
        "slice_index": finding.slice_index,
        "sop_instance_uid": finding.sop_instance_uid,
        "bbox": [bbox.x, bbox.y, bbox.width, bbox.height] if bbox else None,
    }


def run_local(args: argparse.Namespace) -> int:
    from inference import SeriesMetadata, SessionFactory, SlideMetadata, route
    from models.registry import ModelRegistry

    registry = ModelRegistry(args.registry or _default_registry())
    if args.demo_models:
        from models.demo import install_demo_models

        install_demo_models(registry)
    cards = registry.active_cards()
    if not cards:
        print(f"no active model in {registry.root}: promote one, or pass --demo-models", file=sys.stderr)
        return 2
    out: Path = args.out
    (out / "sr").mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hoichan-triage-")))
        try:
            inputs = collect_inputs(args.paths, scratch)
        except (UnsafeArchiveError, zipfile.BadZipFile, FileNotFoundError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        import pydicom

        results: list[JobResult] = []
        jobs: list[_Job] = []
        for group in group_series(inputs.dicom):
            label = inputs.origin.get(group.paths[0], str(group.paths[0].parent))
            routed = route(
                SeriesMetadata.from_dataset(pydicom.dcmread(group.paths[0], stop_before_pixels=True)), cards
            )
            jobs += [_Job("series", label, card, series=group) for card in routed]
            if not routed:
                results.append(_skipped(label, "series", group))
        for slide in inputs.slides:
            label = inputs.origin.get(slide, str(slide))
            routed = route(SlideMetadata(stain=args.stain), cards)
            jobs += [_Job("slide", label, card, slide=slide) for card in routed]
            if not routed:
                results.append(_skipped(label, "slide", None))
        if not jobs and not results:
            print("no DICOM series or slide found in the given paths", file=sys.stderr)
            return 2
        sessions = SessionFactory(registry)
        bar = progress(jobs, total=len(jobs), desc="triage", mode=args.progress)
        for job in bar:
            results.append(_run_job(job, registry, sessions, out))
            bar.set_postfix_str(job.card.key)
        bar.close()
    write_results(out, results)
    failed = sum(r.status == "failed" for r in results)
    print(
        f"{len(results)} result(s), {failed} failed: {out / 'results.csv'}, {out / 'results.json'}",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _default_registry() -> Path:
    from consult_api.config import Settings

    return Settings().model_registry_dir


def _skipped(label: str, kind: str, group: SeriesGroup | None) -> JobResult:
    return JobResult(
        input=label,
        kind=kind,
        status="skipped",
        study_instance_uid=group.study_instance_uid if group else "",
        series_instance_uid=group.series_instance_uid if group else "",
        error="no active model applies",
    )


def _run_job(job: _Job, registry: Any, sessions: Any, out: Path) -> JobResult:
    """Run one job; any error is recorded on its row so one bad input never stops the batch."""
    result = JobResult(input=job.label, kind=job.kind, model=job.card.key)
    if job.series is not None:
        result.study_instance_uid = job.series.study_instance_uid
        result.series_instance_uid = job.series.series_instance_uid
    started = time.perf_counter()
    try:
        model = registry.get(job.card.name, job.card.version)
        network = sessions.network(model)
        if job.series is not None:
            _run_series(job.series, model.card, network, out, result)
        else:
            _run_slide(job.slide, model.card, network, result)
    except Exception as exc:  # noqa: BLE001 - recorded per input, the batch goes on
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _run_series(group: SeriesGroup, card: Any, network: Any, out: Path, result: JobResult) -> None:
    import pydicom

    from inference import NothingToWriteError, run_dicom_series_triage, write_seg, write_sr

    datasets = [pydicom.dcmread(p) for p in group.paths]
    triage = run_dicom_series_triage(datasets, card, network)
    result.scores = {k: round(float(v), 6) for k, v in triage.scores.items()}
    result.findings = [_finding_dict(f) for f in triage.findings]
    if not triage.findings:
        return  # highdicom refuses a TID 1500 report with no measurement group: nothing to write
    sr = write_sr(triage, card, datasets)
    sr_path = out / "sr" / f"{sr.SOPInstanceUID}.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    result.sr_file = str(sr_path.relative_to(out))
    try:
        seg = write_seg(triage, card, datasets)
    except NothingToWriteError:
        return
    seg_path = out / "sr" / f"{seg.SOPInstanceUID}.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    result.seg_file = str(seg_path.relative_to(out))


def _run_slide(slide: Path | None, card: Any, network: Any, result: JobResult) -> None:
    from inference import run_slide_triage

    assert slide is not None
    triage = run_slide_triage(slide, card, network)
    result.scores = {k: round(float(v), 6) for k, v in triage.scores.items()}
    result.findings = [_finding_dict(f) for f in triage.findings]


def csv_rows(results: Sequence[JobResult]) -> Iterator[dict[str, Any]]:
    """One row per (input, model, label): scores below the report threshold are rows too."""
    for r in results:
        base = {
            "input": r.input,
            "kind": r.kind,
            "study_instance_uid": r.study_instance_uid,
            "series_instance_uid": r.series_instance_uid,
            "model": r.model,
            "status": r.status,
            "sr_file": r.sr_file,
            "error": r.error,
        }
        by_label = {f["label"]: f for f in r.findings}
        labels = sorted(set(r.scores) | set(by_label))
        if not labels:
            yield base
        for label in labels:
            f = by_label.get(label, {})
            yield {
                **base,
                "label": label,
                "score": f.get("score", r.scores.get(label)),
                "priority": f.get("priority", ""),
                "finding": bool(f),
                "slice_index": f.get("slice_index"),
                "sop_instance_uid": f.get("sop_instance_uid"),
                "bbox": " ".join(str(v) for v in f["bbox"]) if f.get("bbox") else "",
            }


def write_results(out: Path, results: Sequence[JobResult]) -> None:
    """``results.csv`` and ``results.json``, written to temporary names then renamed (never half)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp_csv = out / ".results.csv.tmp"
    with tmp_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_rows(results))
    os.replace(tmp_csv, out / "results.csv")
    tmp_json = out / ".results.json.tmp"
    tmp_json.write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=2))
    os.replace(tmp_json, out / "results.json")


# -- server mode ----------------------------------------------------------------------------------------

STOW_BATCH = 32
BOUNDARY = "hoichan-batch-triage"


def stow_body(paths: Sequence[Path]) -> bytes:
    """A multipart/related STOW-RS body of Part-10 files."""
    chunks = []
    for path in paths:
        chunks.append(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(path.read_bytes())
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def stow(http: Any, case_id: str, paths: Sequence[Path], batch: int = STOW_BATCH, bar: Any = None) -> None:
    """Upload ``paths`` to the case by STOW-RS, ``batch`` instances per request."""
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    for start in range(0, len(paths), batch):
        part = paths[start : start + batch]
        response = http.post(
            "/dicom-web/studies",
            params={"case": case_id},
            content=stow_body(part),
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
        if response.status_code not in (200, 202):
            raise RuntimeError(f"STOW-RS answered {response.status_code}: {response.text[:500]}")
        if bar is not None:
            bar.update(len(part))


def run_server(args: argparse.Namespace) -> int:
    import httpx

    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hoichan-triage-")))
        try:
            inputs = collect_inputs(args.paths, scratch)
        except (UnsafeArchiveError, zipfile.BadZipFile, FileNotFoundError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        if inputs.slides:
            print(f"server mode sends DICOM only; {len(inputs.slides)} slide(s) left out", file=sys.stderr)
        groups = group_series(inputs.dicom)
        if not groups:
            print("no DICOM series found in the given paths", file=sys.stderr)
            return 2
        http = stack.enter_context(
            httpx.Client(base_url=args.server.rstrip("/"), headers={"X-API-Key": args.api_key}, timeout=120)
        )
        runs_url = f"/api/v1/cases/{args.case_id}/triage"
        before = {r["id"] for r in _get_json(http, runs_url)}
        files = [p for g in groups for p in g.paths]
        bar = progress(total=len(files), desc="upload", mode=args.progress)
        stow(http, args.case_id, files, bar=bar)
        bar.close()
        runs, finished = follow_runs(http, runs_url, before, args.timeout, args.poll, args.progress)
        findings = _get_json(http, f"/api/v1/cases/{args.case_id}/findings")
    wanted = {g.series_instance_uid for g in groups}
    results = server_results(groups, runs, [f for f in findings if f.get("series_instance_uid") in wanted])
    write_results(args.out, results)
    failed = sum(r["state"] == "failed" for r in runs)
    if not finished:
        print(f"gave up after {args.timeout:.0f} s; partial results in {args.out}", file=sys.stderr)
    print(f"{len(runs)} triage run(s), {failed} failed: {args.out / 'results.csv'}", file=sys.stderr)
    return 0 if finished and not failed else 1


def _get_json(http: Any, url: str) -> list[dict[str, Any]]:
    response = http.get(url)
    response.raise_for_status()
    body: list[dict[str, Any]] = response.json()
    return body


def follow_runs(
    http: Any, url: str, before: set[str], timeout: float, poll: float, mode: str = "off"
) -> tuple[list[dict[str, Any]], bool]:
    """Poll the case's triage runs until the ones created since the upload have all ended.

    "All ended" must hold on two polls in a row: studies complete one at a time (after their quiet
    period), so a first study's runs can all be done before a second study's are even planned.
    """
    deadline = time.monotonic() + timeout
    bar = progress(total=0, desc="triage", mode=mode)
    settled, new = 0, []
    while time.monotonic() < deadline:
        new = [r for r in _get_json(http, url) if r["id"] not in before]
        ended = sum(r["state"] in TERMINAL_STATES for r in new)
        bar.total = len(new)
        bar.update(ended - bar.n)
        settled = settled + 1 if new and ended == len(new) else 0
        if settled >= 2:
            bar.close()
            return new, True
        time.sleep(poll)
    bar.close()
    return new, False


def server_results(
    groups: Sequence[SeriesGroup], runs: Sequence[dict[str, Any]], findings: Sequence[dict[str, Any]]
) -> list[JobResult]:
    """What the service produced, per series and model version, in the local mode's shapes."""
    results = []
    for group in groups:
        mine = [f for f in findings if f.get("series_instance_uid") == group.series_instance_uid]
        for model in sorted({f"{f['model_name']}@{f['model_version']}" for f in mine}):
            of_model = [f for f in mine if f"{f['model_name']}@{f['model_version']}" == model]
            results.append(
                JobResult(
                    input=str(group.paths[0].parent),
                    kind="series",
                    model=model,
                    study_instance_uid=group.study_instance_uid,
                    series_instance_uid=group.series_instance_uid,
                    scores={f["label"]: f["score"] for f in of_model if f.get("score") is not None},
                    findings=[_server_finding(f) for f in of_model],
                )
            )
    for run in runs:
        if run["state"] == "failed":
            results.append(
                JobResult(
                    input=run.get("series_id") or run.get("slide_id") or "",
                    kind=run["subject_kind"],
                    model=f"{run['model_name']}@{run['model_version']}",
                    status="failed",
                    error=run.get("error", ""),
                )
            )
    return results


def _server_finding(finding: dict[str, Any]) -> dict[str, Any]:
    """A finding as the API returns it, in the local mode's shape (bbox as [x, y, width, height])."""
    location = dict(finding.get("location") or {})
    bbox = location.pop("bbox", None)
    return {
        "label": finding["label"],
        "score": finding.get("score"),
        "priority": finding.get("priority"),
        **location,
        "bbox": [bbox["x"], bbox["y"], bbox["width"], bbox["height"]] if isinstance(bbox, dict) else bbox,
    }
