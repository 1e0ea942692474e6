"""Pure helpers that turn API data into what the pages show: worklist rows, countdowns, timelines,
and a slice with its zoom and AI marks. No Gradio, no HTTP: unit-testable on plain data."""

from __future__ import annotations

import html
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from PIL import Image, ImageDraw

from viewer.i18n import text

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (60.0, 400.0),
}
"""(center, width) in Hounsfield units, as radiologists name them."""

PRIORITY_COLOURS = {"critical": "#c62828", "urgent": "#ef6c00", "routine": "#2e7d32"}
DISPLAY_SIDE = 512
OVERLAY_COLOUR = (255, 64, 64)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {rest // 60:02d}m"


def countdown(deadline: str | None, now: datetime, lang: str) -> str:
    """'3h 05m left' or 'overdue 1d 2h': what a specialist scans the worklist for."""
    when = parse_time(deadline)
    if when is None:
        return "—"
    seconds = (when - now).total_seconds()
    key = "left" if seconds >= 0 else "overdue"
    return text(lang, key, t=duration(seconds))


def ai_cell(findings: Sequence[Mapping[str, Any]] | None, alerts: Iterable[str]) -> str:
    """The top model finding (label and score), or the alert flags when findings are unknown."""
    scored = [f for f in findings or [] if f.get("score") is not None]
    if scored:
        top = max(scored, key=lambda f: float(f["score"]))
        return f"{html.escape(str(top.get('label', '')))} {float(top['score']):.2f}"
    flags = [a for a in alerts if a == "critical_finding"]
    return "⚠ " + ", ".join(flags) if flags else "—"


def worklist_html(
    items: Sequence[Mapping[str, Any]],
    facility_names: Mapping[str, str],
    findings: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime,
    lang: str,
) -> str:
    """The worklist as a table; each row carries its case id for the click handler."""
    if not items:
        return f"<p class='hc-empty'>{html.escape(text(lang, 'empty_worklist'))}</p>"
    heads = ["col_priority", "col_ai", "col_deadline", "col_from", "col_kind", "col_status", "col_question"]
    head = "".join(f"<th>{html.escape(text(lang, h))}</th>" for h in heads)
    rows = "".join(_worklist_row(item, facility_names, findings, now, lang) for item in items)
    return f"<table class='hc-worklist'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _worklist_row(
    item: Mapping[str, Any],
    facility_names: Mapping[str, str],
    findings: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime,
    lang: str,
) -> str:
    priority = str(item.get("priority", "routine"))
    colour = PRIORITY_COLOURS.get(priority, "#555")
    urgent = " ⚡" if item.get("urgent") else ""
    overdue = " hc-overdue" if "overdue" in item.get("alerts", []) else ""
    cells = [
        f"<span class='hc-badge' style='background:{colour}'>{html.escape(priority)}</span>{urgent}",
        ai_cell(findings.get(str(item["id"])), item.get("alerts", [])),
        f"<span class='hc-deadline{overdue}'>{html.escape(countdown(item.get('deadline'), now, lang))}"
        "</span>",
        html.escape(facility_names.get(str(item.get("referring_facility_id")), "?")),
        html.escape(str(item.get("kind", ""))),
        html.escape(str(item.get("status", ""))),
        html.escape(str(item.get("clinical_question", ""))[:120]),
    ]
    body = "".join(f"<td>{c}</td>" for c in cells)
    case_id = html.escape(str(item["id"]), quote=True)
    return f"<tr class='hc-row' data-case='{case_id}' tabindex='0'>{body}</tr>"


def timeline_md(events: Sequence[Mapping[str, Any]], lang: str) -> str:
    lines = [f"**{text(lang, 'timeline')}**", ""]
    for event in events:
        when = parse_time(event.get("occurred_at"))
        stamp = f"{when:%Y-%m-%d %H:%M}" if when else ""
        change = (
            f" {event['from_status']} → {event['to_status']}"
            if event.get("to_status") and event.get("from_status")
            else ""
        )
        note = f": {event['text']}" if event.get("text") else ""
        lines.append(f"- `{stamp}` {event.get('type', '')}{change}{note}")
    return "\n".join(lines)


def dicom_value(item: Mapping[str, Any], tag: str, default: str = "") -> str:
    """The first value of a DICOM JSON attribute (person names by their alphabetic form)."""
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return default
    first = values[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)


def crop_for_zoom(
    size: tuple[int, int], zoom: float, centre: tuple[float, float]
) -> tuple[int, int, int, int]:
    """The box of the image shown at ``zoom`` around ``centre`` (fractions), kept inside the image."""
    width, height = size
    box_w, box_h = width / max(zoom, 1.0), height / max(zoom, 1.0)
    left = min(max(centre[0] * width - box_w / 2, 0.0), width - box_w)
    top = min(max(centre[1] * height - box_h / 2, 0.0), height - box_h)
    return (round(left), round(top), round(left + box_w), round(top + box_h))


def marks_for_slice(
    findings: Sequence[Mapping[str, Any]], sop_uid: str, index: int
) -> Sequence[Mapping[str, Any]]:
    """Findings located on this slice (by SOP Instance UID, else by slice index)."""
    marks = []
    for finding in findings:
        where = finding.get("amended_location") or finding.get("location") or {}
        if where.get("sop_instance_uid") == sop_uid or where.get("slice_index") == index:
            marks.append(finding)
    return marks


def compose_slice(
    jpeg: bytes,
    zoom: float,
    centre: tuple[float, float],
    marks: Sequence[Mapping[str, Any]],
    overlay: bool,
) -> Image.Image:
    """The displayed slice: AI boxes drawn at full resolution, then cropped and scaled for zoom."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    if overlay:
        _draw_marks(image, marks)
    box = crop_for_zoom(image.size, zoom, centre)
    shown = image.crop(box)
    scale = DISPLAY_SIDE / max(shown.size)
    return shown.resize((max(1, round(shown.width * scale)), max(1, round(shown.height * scale))))


def _draw_marks(image: Image.Image, marks: Sequence[Mapping[str, Any]]) -> None:
    draw = ImageDraw.Draw(image)
    for mark in marks:
        where = mark.get("amended_location") or mark.get("location") or {}
        bbox = where.get("bbox")
        if not bbox:
            continue
        x, y, w, h = (float(bbox[k]) for k in ("x", "y", "width", "height"))
        draw.rectangle((x, y, x + w, y + h), outline=OVERLAY_COLOUR, width=max(1, image.width // 128))
        label = str(mark.get("amended_label") or mark.get("label", ""))
        draw.text((x + 2, max(0.0, y - 12)), label, fill=OVERLAY_COLOUR)


def finding_choice(finding: Mapping[str, Any]) -> tuple[str, str]:
    """(label shown in the picker, finding id)."""
    score = finding.get("score")
    scored = f" {float(score):.2f}" if score is not None else ""
    label = finding.get("amended_label") or finding.get("label", "?")
    return (f"{label}{scored} · {finding.get('state', '')}", str(finding["id"]))


def table_rows(items: Sequence[Mapping[str, Any]], columns: list[str]) -> list[list[str]]:
    return [[_cell(item.get(c)) for c in columns] for item in items]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict | list):
        return (
            ", ".join(f"{k}={v}" for k, v in value.items())
            if isinstance(value, dict)
            else ", ".join(map(str, value))
        )
    return "" if value is None else str(value)
