"""Rules for slides: who may add one to a case, ingest (identify, check, store), and who may see it.

A slide's visibility is its case's visibility, so the rule is never restated here: every lookup
goes through ``repository.visible_slide``, which joins the case and applies ``case_visibility``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.audit import service as audit
from consult_api.cases import service as cases
from consult_api.cases.models import Case, CaseStatus
from consult_api.db import new_id
from consult_api.errors import Conflict, NotPermitted, ResourceNotFound
from consult_api.slides import archives, formats, repository
from consult_api.slides.models import Slide
from consult_api.storage.blobs import BlobStore

log = logging.getLogger("consult_api.slides")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SlideFiles:
    """Where slides are served from: ``root/<sha256>/<entry>`` (see ``models``)."""

    root: Path

    def folder(self, sha256: str) -> Path:
        return self.root / sha256

    @property
    def work(self) -> Path:
        return self.root / "tmp"


def safe_filename(filename: str) -> str:
    """The last path component, reduced to characters safe in any file system."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_CHARS.sub("_", base).strip("._")[:200]
    return cleaned or "slide"


def check_may_add(principal: Principal, case: Case) -> None:
    if not (principal.is_referrer_for(case) or principal.is_specialist_for(case) or principal.is_admin):
        raise NotPermitted("only the referring facility or the case's specialists add slides")
    if case.status is CaseStatus.closed:
        raise Conflict("the case is closed")


def upload_target(session: Session, principal: Principal, case_id: str) -> Case:
    """The case a slide upload goes to, checked before any byte is accepted."""
    case = cases.get_case(session, principal, case_id, audit_read=False)
    check_may_add(principal, case)
    return case


def _stage(path: Path, filename: str, work: Path) -> tuple[Path, PurePosixPath]:
    """A folder OpenSlide can open the upload from, and the entry to open inside it."""
    if archives.is_zip(path):
        unpacked = archives.unpack(path, work)
        return work, formats.find_entry(work, unpacked.files)
    work.mkdir(parents=True)
    name = PurePosixPath(safe_filename(filename))
    (work / name).symlink_to(path.resolve())
    return work, name


def _publish(staged: Path, entry: PurePosixPath, blob: Path, folder: Path) -> None:
    """Make ``folder`` serve ``entry``: a link to the stored blob, or the unpacked archive.

    Identical bytes share one folder (it is named by their hash); a concurrent publisher that won
    the race leaves the same content, so losing it is not an error.
    """
    target = folder.joinpath(*entry.parts)
    if target.exists():
        return
    try:
        if staged.joinpath(*entry.parts).is_symlink():
            folder.mkdir(parents=True, exist_ok=True)
            target.symlink_to(blob.resolve())
        else:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staged, folder)
    except OSError:
        if not target.exists():
            raise


def ingest(
    session: Session,
    principal: Principal,
    store: BlobStore,
    files: SlideFiles,
    *,
    case_id: str,
    path: Path,
    filename: str,
) -> Slide:
    """Identify and check the file with OpenSlide, store it, record it on the case.

    ``SlideRejected`` (422, with the reason) if OpenSlide cannot open or read it; then nothing is
    stored and the caller removes ``path``.
    """
    case = upload_target(session, principal, case_id)
    staged = files.work / new_id()
    try:
        folder, entry = _stage(path, filename, staged)
        facts = formats.inspect(folder / entry)
        ref = store.put_file(path)
        _publish(folder, entry, store.local_path(ref.sha256), files.folder(ref.sha256))
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    slide = Slide(
        case_id=case.id,
        filename=filename[:255],
        blob_sha256=ref.sha256,
        size=ref.size,
        entry=str(entry),
        vendor=facts.vendor,
        width=facts.width,
        height=facts.height,
        level_count=len(facts.levels),
        levels=facts.levels_json(),
        mpp_x=facts.mpp_x,
        mpp_y=facts.mpp_y,
        objective_power=facts.objective_power,
        associated_images=facts.associated_json(),
        created_by=principal.actor,
    )
    repository.add(session, slide)
    audit.record(session, principal, "slide.create", "slide", slide.id, case_id=case.id)
    log.info("slide ingested", extra={"slide_id": slide.id, "vendor": slide.vendor, "size": slide.size})
    return slide


def serving_path(slide: Slide, store: BlobStore, files: SlideFiles) -> Path:
    """The file OpenSlide opens, rebuilding the serving folder from the blob if it is missing."""
    folder = files.folder(slide.blob_sha256)
    entry = PurePosixPath(slide.entry)
    target = folder.joinpath(*entry.parts)
    if target.exists():
        return target
    blob = store.local_path(slide.blob_sha256)
    staged = files.work / new_id()
    try:
        if archives.is_zip(blob):
            archives.unpack(blob, staged)
        else:
            staged.mkdir(parents=True)
            staged.joinpath(*entry.parts).symlink_to(blob.resolve())
        _publish(staged, entry, blob, folder)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return target


def get_slide(
    session: Session, principal: Principal, slide_id: str, action: str | None = "slide.read"
) -> Slide:
    """The slide if its case is visible (404 otherwise); audited as ``action`` unless None."""
    slide = repository.visible_slide(session, principal, slide_id)
    if slide is None:
        raise ResourceNotFound("slide", slide_id)
    if action is not None:
        audit.record(session, principal, action, "slide", slide.id, case_id=slide.case_id)
    return slide


def list_slides(
    session: Session, principal: Principal, case_id: str | None, limit: int, offset: int
) -> tuple[Sequence[Slide], int]:
    if case_id is not None:
        cases.get_case(session, principal, case_id, audit_read=False)
    slides, total = repository.visible_slides(session, principal, case_id, limit, offset)
    audit.record(
        session,
        principal,
        "slide.list",
        "slide",
        None,
        case_id=case_id,
        detail={"slide_ids": [s.id for s in slides]},
    )
    return slides, total


def read_associated(session: Session, principal: Principal, slide_id: str, name: str) -> Slide:
    """Label and macro images show the patient's name: audited with their PHI flag."""
    slide = get_slide(session, principal, slide_id, action=None)
    known = {image["name"]: image for image in slide.associated_images}
    if name not in known:
        raise ResourceNotFound("associated image", name)
    audit.record(
        session,
        principal,
        "slide.associated.read",
        "slide",
        slide.id,
        case_id=slide.case_id,
        detail={"name": name, "phi": bool(known[name]["phi"])},
    )
    return slide
