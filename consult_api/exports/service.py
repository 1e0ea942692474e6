"""Export specialist-confirmed findings for training: files de-identified, provenance pseudonymous.

Only accepted or amended findings leave, as a folder ``datasets.manifest`` reads: DICOM series
de-identified with the PS3.15 Basic Profile (one keyed UID mapping per export, so references stay
consistent), slides re-written without label and macro images, case and reviewer ids replaced by
keyed pseudonyms. The export key never leaves the service, so pseudonyms cannot be reversed from
the files, and two exports do not share pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydicom.filebase import DicomBytesIO
from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.access import Principal, Role
from consult_api.audit import service as audit
from consult_api.db import utcnow
from consult_api.dicom import repository as dicom_repository
from consult_api.dicom.deidentify import deidentify
from consult_api.dicom.models import Instance
from consult_api.errors import Conflict, NotPermitted
from consult_api.exports.slides import write_label_free_copy
from consult_api.findings.models import Finding, FindingState
from consult_api.slides.models import Slide
from consult_api.slides.service import SlideFiles, serving_path
from consult_api.storage.blobs import BlobStore
from datasets.manifest import Manifest, ManifestItem, ModelRef, Provenance, write_manifest

EXPORT_ROLES = frozenset({Role.ml_engineer, Role.admin})
CONFIRMED = (FindingState.accepted, FindingState.amended)


@dataclass
class ExportResult:
    folder: Path
    items: int = 0
    series: int = 0
    slides: int = 0
    instances: int = 0
    skipped: list[str] = field(default_factory=list)


class _Pseudonyms:
    """Keyed, export-local pseudonyms: stable within one export, unlinkable across exports."""

    def __init__(self) -> None:
        self.key = secrets.token_bytes(32)

    def __call__(self, kind: str, value: str) -> str:
        digest = hmac.new(self.key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:16]}"


def check_role(principal: Principal) -> None:
    if not principal.has_any(*EXPORT_ROLES):
        raise NotPermitted("training exports are for ML engineers and administrators")


def confirmed_findings(session: Session, since: datetime | None) -> Sequence[Finding]:
    query = select(Finding).where(Finding.state.in_(CONFIRMED)).order_by(Finding.reviewed_at, Finding.id)
    if since is not None:
        query = query.where(Finding.reviewed_at >= since)
    return session.scalars(query).all()


def _provenance(finding: Finding, pseudonym: _Pseudonyms) -> Provenance:
    amended = finding.state is FindingState.amended
    proposed_by = (
        ModelRef(name=finding.model_name, version=finding.model_version)
        if finding.model_name and finding.model_version
        else None
    )
    return Provenance(
        case_pseudo_id=pseudonym("case", finding.case_id),
        reviewer_pseudo_id=pseudonym("reviewer", finding.reviewer or "unknown"),
        proposed_by=proposed_by,
        decision="amended" if amended else "accepted",
        original_label=finding.label if amended and finding.amended_label else None,
    )


def _label(finding: Finding) -> str:
    return finding.amended_label or finding.label


def _location(finding: Finding) -> dict[str, Any]:
    return dict(finding.amended_location or finding.location or {})


def _bbox_polygon(location: dict[str, Any]) -> dict[str, Any] | None:
    box = location.get("bbox")
    if not isinstance(box, dict) or not {"x", "y", "width", "height"} <= box.keys():
        return None
    x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
    return {"type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]]}


class _Exporter:
    def __init__(self, session: Session, store: BlobStore, files: SlideFiles, folder: Path) -> None:
        self.session = session
        self.store = store
        self.files = files
        self.folder = folder
        self.pseudonym = _Pseudonyms()
        self.uid_secret = secrets.token_bytes(32)
        self.written: dict[str, list[str]] = {}
        self.result = ExportResult(folder)

    def series_files(self, finding: Finding) -> list[str]:
        uid = finding.series_instance_uid or ""
        if uid in self.written:
            return self.written[uid]
        series = dicom_repository.series_by_uid(self.session, uid)
        instances = (
            self.session.scalars(
                select(Instance)
                .where(Instance.series_id == series.id)
                .order_by(Instance.instance_number, Instance.id)
            ).all()
            if series
            else []
        )
        if not instances:
            return []
        patient = self.pseudonym("case", finding.case_id)
        relative_dir = f"series/{self.pseudonym('series', uid)}"
        (self.folder / relative_dir).mkdir(parents=True, exist_ok=True)
        paths = [
            self._write_instance(instance, relative_dir, index, patient)
            for index, instance in enumerate(instances)
        ]
        self.written[uid] = paths
        self.result.series += 1
        self.result.instances += len(paths)
        return paths

    def _write_instance(self, instance: Instance, relative_dir: str, index: int, patient: str) -> str:
        data = b"".join(self.store.open_verified(instance.blob_sha256))
        ds = pydicom.dcmread(DicomBytesIO(data))
        clean = deidentify(ds, uid_secret=self.uid_secret, patient_pseudonym=patient)
        relative = f"{relative_dir}/{index:05d}.dcm"
        clean.save_as(self.folder / relative, enforce_file_format=True)
        return relative

    def slide_files(self, finding: Finding) -> list[str]:
        slide_id = finding.slide_id or ""
        if slide_id in self.written:
            return self.written[slide_id]
        slide = self.session.get(Slide, slide_id)
        if slide is None:
            return []
        relative = f"slides/{self.pseudonym('slide', slide_id)}.tiff"
        (self.folder / "slides").mkdir(parents=True, exist_ok=True)
        write_label_free_copy(serving_path(slide, self.store, self.files), self.folder / relative)
        self.written[slide_id] = [relative]
        self.result.slides += 1
        return [relative]

    def item(self, finding: Finding) -> ManifestItem | None:
        location = _location(finding)
        kind: Literal["slide", "dicom_series"]
        if finding.slide_id:
            files, kind, geometry = self.slide_files(finding), "slide", _bbox_polygon(location)
        elif finding.series_instance_uid:
            files, kind, geometry = self.series_files(finding), "dicom_series", None
        else:
            return None
        if not files:
            return None
        return ManifestItem(
            id=self.pseudonym("finding", finding.id),
            kind=kind,
            files=tuple(files),
            labels=(_label(finding),),
            geometry=geometry,
            provenance=_provenance(finding, self.pseudonym),
        )


def export_training(
    session: Session,
    principal: Principal,
    store: BlobStore,
    files: SlideFiles,
    folder: Path,
    *,
    since: datetime | None = None,
) -> ExportResult:
    """Write the export into ``folder`` (which must be empty or absent) and audit it."""
    check_role(principal)
    if folder.exists() and any(folder.iterdir()):
        raise Conflict(f"export {folder.name} exists already")
    folder.mkdir(parents=True, exist_ok=True)
    exporter = _Exporter(session, store, files, folder)
    items: list[ManifestItem] = []
    for finding in confirmed_findings(session, since):
        item = exporter.item(finding)
        if item is None:
            exporter.result.skipped.append(finding.id)
        else:
            items.append(item)
    write_manifest(folder, Manifest(created_at=utcnow(), items=tuple(items)))
    exporter.result.items = len(items)
    audit.record(
        session,
        principal,
        "export.training",
        "export",
        folder.name,
        detail={
            "items": len(items),
            "series": exporter.result.series,
            "slides": exporter.result.slides,
            "skipped": len(exporter.result.skipped),
        },
    )
    return exporter.result


def archive(folder: Path) -> Path:
    """The export as one zip beside its folder (built once), for download over HTTP."""
    target = folder.with_suffix(".zip")
    if target.is_file():
        return target
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as bundle:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            bundle.write(path, path.relative_to(folder).as_posix())
    partial.replace(target)
    return target
