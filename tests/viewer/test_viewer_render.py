"""The pure helpers behind the pages, on plain data."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import gradio as gr
from PIL import Image

from viewer import render
from viewer.i18n import LOCALES, MESSAGES, text
from viewer.mount import PROGRESS_POLL_S, QUEUE_POLL_S, slow_down_queue_polling

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_countdown_left_and_overdue_in_both_languages() -> None:
    assert render.countdown((NOW + timedelta(hours=3, minutes=5)).isoformat(), NOW, "en") == "3h 05m left"
    assert render.countdown((NOW - timedelta(days=1, hours=2)).isoformat(), NOW, "vi") == "quá hạn 1d 2h"
    assert render.countdown(None, NOW, "en") == "—"


def test_worklist_rows_carry_case_ids_and_escape_text() -> None:
    item = {
        "id": "c1",
        "priority": "critical",
        "urgent": True,
        "deadline": None,
        "referring_facility_id": "f",
        "kind": "imaging",
        "status": "triaged",
        "clinical_question": "<b>x</b>",
        "alerts": ["critical_finding"],
    }
    html = render.worklist_html([item], {"f": "District 1"}, {}, NOW, "en")
    for part in ("data-case='c1'", "&lt;b&gt;", "#c62828", "District 1"):
        assert part in html


def test_zoom_crop_stays_inside_the_image() -> None:
    assert render.crop_for_zoom((512, 512), 2.0, (0.5, 0.5)) == (128, 128, 384, 384)
    assert render.crop_for_zoom((512, 512), 4.0, (0.0, 1.0)) == (0, 384, 128, 512)


def test_overlay_draws_boxes_only_when_on() -> None:
    buffer = io.BytesIO()
    Image.new("L", (64, 64)).save(buffer, format="JPEG")
    mark = {"label": "nodule", "location": {"bbox": {"x": 10, "y": 10, "width": 20, "height": 20}}}
    on = render.compose_slice(buffer.getvalue(), 1.0, (0.5, 0.5), [mark], True)
    off = render.compose_slice(buffer.getvalue(), 1.0, (0.5, 0.5), [mark], False)
    assert on.size == off.size == (512, 512)
    assert max(on.getdata(0)) > 200
    assert max(off.getdata(0)) < 60


def test_every_label_and_message_has_english_and_vietnamese() -> None:
    for name, entry in LOCALES.items():
        assert set(entry) == {"en", "vi"}, name
    for key, entry in MESSAGES.items():
        assert set(entry) == {"en", "vi"}, key
    assert text("fr", "timeline") == "Timeline"


def test_the_mounted_queue_polls_for_work_every_25_ms_not_every_millisecond() -> None:
    """Pinned Gradio's idle-loop attributes still exist, so the slow-down is not silently a no-op."""
    with gr.Blocks() as blocks:
        gr.Markdown("x")
    queue = blocks._queue
    assert queue.sleep_when_free < QUEUE_POLL_S  # Gradio's own default, which this overrides
    slow_down_queue_polling(blocks)
    assert queue.sleep_when_free == QUEUE_POLL_S
    assert queue.progress_update_sleep_when_free == PROGRESS_POLL_S
