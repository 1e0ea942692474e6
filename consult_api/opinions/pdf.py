"""The signed opinion as a printable PDF: case, opinion text, confirmed findings and key images.

Rendered by the API (not the viewer) so that the referring facility prints exactly what was signed,
from the stored record, whatever client it uses. Collecting (``collect_report``) is separate from
drawing (``render_pdf``) so the layout tests without a database.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fpdf import FPDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from consult_api.access import Principal
from consult_api.cases import service as cases
from consult_api.cases.models import Case
from consult_api.dicom import pixels
from consult_api.dicom.models import Instance, Series, Study
from consult_api.dicom.service import load_dataset
from consult_api.errors import Conflict, HoichanError
from consult_api.findings.models import Finding, FindingState
from consult_api.opinions import service
from consult_api.opinions.models import Addendum, Opinion, OpinionStatus
from consult_api.storage.blobs import BlobStore

MAX_KEY_IMAGES = 4
KEY_IMAGE_SIDE = 384
UNICODE_FONTS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
)
"""A TrueType font with Vietnamese glyphs; without one, text is reduced to Latin-1."""


@dataclass(frozen=True)
class KeyImage:
    caption: str
    jpeg: bytes


@dataclass(frozen=True)
class FindingLine:
    label: str
    score: float | None
    state: str
    source: str
    where: str


@dataclass
class OpinionReport:
    case_id: str
    kind: str
    clinical_question: str
    patient: str
    opinion_id: str
    findings_text: str
    impression: str
    recommendations: str
    signed_at: datetime | None
    author_id: str
    content_sha256: str | None
    addenda: list[tuple[datetime, str]] = field(default_factory=list)
    findings: list[FindingLine] = field(default_factory=list)
    key_images: list[KeyImage] = field(default_factory=list)


def collect_report(
    session: Session, principal: Principal, store: BlobStore, case_id: str, opinion_id: str
) -> OpinionReport:
    """Gather what the PDF shows; only signed opinions are printed (a draft may still change)."""
    opinion = service.get_opinion(session, principal, case_id, opinion_id)
    if opinion.status is not OpinionStatus.signed:
        raise Conflict("only a signed opinion is printed")
    case = cases.get_case(session, principal, case_id, audit_read=False)
    findings = _confirmed_findings(session, case.id)
    return OpinionReport(
        case_id=case.id,
        kind=str(case.kind),
        clinical_question=case.clinical_question,
        patient=f"{case.patient.name} ({case.patient.identifier})",
        opinion_id=opinion.id,
        findings_text=opinion.findings,
        impression=opinion.impression,
        recommendations=opinion.recommendations,
        signed_at=opinion.signed_at,
        author_id=opinion.author_id,
        content_sha256=opinion.content_sha256,
        addenda=[(a.created_at, a.text) for a in _addenda(opinion)],
        findings=[_finding_line(f) for f in findings],
        key_images=_key_images(session, store, case, findings),
    )


def _addenda(opinion: Opinion) -> list[Addendum]:
    return sorted(opinion.addenda, key=lambda a: a.created_at)


def _confirmed_findings(session: Session, case_id: str) -> list[Finding]:
    states = (FindingState.accepted, FindingState.amended)
    query = select(Finding).where(Finding.case_id == case_id, Finding.state.in_(states))
    return list(session.scalars(query.order_by(Finding.created_at)))


def _finding_line(finding: Finding) -> FindingLine:
    location = finding.amended_location or finding.location or {}
    where = f"slice {location['slice_index'] + 1}" if "slice_index" in location else ""
    source = f"{finding.model_name} {finding.model_version}" if finding.model_name else str(finding.source)
    return FindingLine(
        label=finding.amended_label or finding.label,
        score=finding.score,
        state=str(finding.state),
        source=source,
        where=where,
    )


def _key_images(session: Session, store: BlobStore, case: Case, findings: list[Finding]) -> list[KeyImage]:
    """The slices the confirmed findings point at, else the middle slice of each series."""
    chosen: list[tuple[str, Instance]] = []
    for finding in findings:
        uid = (finding.amended_location or finding.location or {}).get("sop_instance_uid")
        instance = session.scalar(select(Instance).where(Instance.sop_instance_uid == uid)) if uid else None
        if instance is not None:
            chosen.append((f"{finding.amended_label or finding.label}", instance))
    if not chosen:
        chosen = _middle_slices(session, case.id)
    return [image for caption, inst in chosen[:MAX_KEY_IMAGES] if (image := _render(store, caption, inst))]


def _middle_slices(session: Session, case_id: str) -> list[tuple[str, Instance]]:
    series_rows = session.scalars(
        select(Series).join(Study, Series.study_id == Study.id).where(Study.case_id == case_id)
    )
    chosen = []
    for series in series_rows:
        instances = list(
            session.scalars(
                select(Instance).where(Instance.series_id == series.id).order_by(Instance.instance_number)
            )
        )
        if instances:
            caption = f"{series.modality} {series.series_description}".strip()
            chosen.append((caption, instances[len(instances) // 2]))
    return chosen


def _render(store: BlobStore, caption: str, instance: Instance) -> KeyImage | None:
    try:
        data = pixels.render(load_dataset(store, instance), viewport=(KEY_IMAGE_SIDE, KEY_IMAGE_SIDE))
    except (HoichanError, ValueError, OSError):
        return None  # an image that cannot be rendered is left out, not a failed report
    return KeyImage(caption=caption, jpeg=data)


def render_pdf(report: OpinionReport) -> bytes:
    """Lay the report out on A4 pages."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    font = _set_font(pdf)
    pdf.add_page()
    write = _Text(unicode=font == "Body")
    pdf.set_font(font, size=16)
    pdf.cell(0, 10, write("Specialist opinion"), new_x="LMARGIN", new_y="NEXT")
    _section(pdf, font, write, "Case", _case_lines(report))
    _section(pdf, font, write, "Findings", [report.findings_text or "-"])
    _section(pdf, font, write, "Impression", [report.impression or "-"])
    _section(pdf, font, write, "Recommendations", [report.recommendations or "-"])
    if report.findings:
        _section(pdf, font, write, "Confirmed AI and specialist findings", _finding_lines(report))
    for created_at, text in report.addenda:
        _section(pdf, font, write, f"Addendum {created_at:%Y-%m-%d %H:%M} UTC", [text])
    _images(pdf, font, write, report.key_images)
    return bytes(pdf.output())


def _set_font(pdf: FPDF) -> str:
    for path in UNICODE_FONTS:
        if path.is_file():
            pdf.add_font("Body", fname=str(path))
            return "Body"
    return "Helvetica"


class _Text:
    """Text as the chosen font can draw it (Latin-1 for the core fonts)."""

    def __init__(self, *, unicode: bool) -> None:
        self.unicode = unicode

    def __call__(self, text: str) -> str:
        if self.unicode:
            return text
        plain = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
        return plain.encode("latin-1", "ignore").decode("latin-1")


def _case_lines(report: OpinionReport) -> list[str]:
    signed = f"{report.signed_at:%Y-%m-%d %H:%M} UTC" if report.signed_at else "-"
    return [
        f"Case {report.case_id} ({report.kind})",
        f"Patient: {report.patient}",
        f"Clinical question: {report.clinical_question}",
        f"Signed {signed} by {report.author_id}",
        f"Content sha256: {report.content_sha256 or '-'}",
    ]


def _finding_lines(report: OpinionReport) -> list[str]:
    lines = []
    for f in report.findings:
        score = f" score {f.score:.2f}" if f.score is not None else ""
        where = f", {f.where}" if f.where else ""
        lines.append(f"- {f.label}{score} ({f.state}; {f.source}{where})")
    return lines


def _section(pdf: FPDF, font: str, write: _Text, title: str, lines: list[str]) -> None:
    pdf.ln(3)
    pdf.set_font(font, size=12)
    pdf.cell(0, 8, write(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(font, size=10)
    for line in lines:
        pdf.multi_cell(0, 5, write(line), new_x="LMARGIN", new_y="NEXT")


def _images(pdf: FPDF, font: str, write: _Text, images: list[KeyImage]) -> None:
    if not images:
        return
    _section(pdf, font, write, "Key images", [])
    side = 85.0
    for index, image in enumerate(images):
        if index % 2 == 0 and pdf.get_y() + side + 10 > pdf.h - 15:
            pdf.add_page()
        x = pdf.l_margin + (index % 2) * (side + 10)
        y = pdf.get_y()
        pdf.image(io.BytesIO(image.jpeg), x=x, y=y, w=side, h=side, keep_aspect_ratio=True)
        pdf.set_xy(x, y + side + 1)
        pdf.cell(side, 5, write(image.caption), align="C")
        if index % 2 == 1 or index == len(images) - 1:
            pdf.set_xy(pdf.l_margin, y + side + 8)
        else:
            pdf.set_xy(x, y)
