"""Case review for specialists: clinical question and timeline, the DICOM slice viewer, the slide
viewer, AI findings with accept / reject / amend, the opinion editor with signing, more-info requests
and the video session."""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from viewer import render
from viewer.components.common import HANDLED, Elements, error_text, require
from viewer.engine import Engine
from viewer.i18n import component_args, text
from viewer.render import WINDOW_PRESETS
from viewer.state import SliceView, UserSession

PRESET_CHOICES = [*WINDOW_PRESETS, "custom"]
TOP_TILE_SIDE = 256
MAX_TOP_TILES = 12


def _specialist(session: UserSession | None) -> UserSession:
    return require(session, lambda s: s.is_specialist)


def create_review_tab(engine: Engine) -> Elements:
    add = engine.manager.add
    e: Elements = {}
    with gr.Tab(id="review", visible=False, **component_args("tab_review", "en")) as tab:
        add("tab_review", tab)
        e["tab"] = tab
        with gr.Row():
            e["header"] = gr.Markdown(text("en", "no_case"), elem_id="hc-case-header")
            with gr.Column(scale=0, min_width=240):
                e["start"] = add(
                    "start_review",
                    gr.Button(
                        visible=False,
                        elem_id="hc-start-review",
                        size="sm",
                        **component_args("start_review", "en"),
                    ),
                )
                e["video"] = add(
                    "video",
                    gr.Button(visible=False, elem_id="hc-video", size="sm", **component_args("video", "en")),
                )
        e["message"] = gr.Markdown(elem_id="hc-review-message")
        with gr.Tabs():
            with gr.Tab("DICOM", id="dicom"):
                _slice_viewer(engine, e)
            with gr.Tab("WSI", id="wsi"):
                _slide_viewer(engine, e)
            with gr.Tab("Opinion", id="opinion"):
                _opinion_editor(engine, e)
            with gr.Tab("Timeline", id="timeline"):
                e["timeline"] = gr.Markdown(elem_id="hc-timeline")
    return e


def _slice_viewer(engine: Engine, e: Elements) -> None:
    add = engine.manager.add
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=320):
            e["image"] = gr.Image(
                type="pil",
                interactive=False,
                show_label=False,
                height=512,
                elem_id="hc-slice-image",
                buttons=["fullscreen"],
            )
            with gr.Row():
                e["prev"] = add(
                    "prev_slice",
                    gr.Button(
                        elem_id="hc-prev", size="sm", min_width=60, **component_args("prev_slice", "en")
                    ),
                )
                e["slider"] = add(
                    "slice",
                    gr.Slider(
                        1,
                        2,
                        step=1,
                        value=1,
                        elem_id="hc-slice-slider",
                        scale=4,
                        **component_args("slice", "en"),
                    ),
                )
                e["next"] = add(
                    "next_slice",
                    gr.Button(
                        elem_id="hc-next", size="sm", min_width=60, **component_args("next_slice", "en")
                    ),
                )
            e["info"] = gr.Markdown(elem_id="hc-slice-info")
        with gr.Column(scale=1, min_width=240):
            e["series"] = add(
                "series", gr.Dropdown([], elem_id="hc-series", **component_args("series", "en"))
            )
            e["preset"] = add(
                "window_preset",
                gr.Radio(
                    PRESET_CHOICES,
                    value="abdomen",
                    elem_id="hc-preset",
                    **component_args("window_preset", "en"),
                ),
            )
            with gr.Row():
                e["center"] = add(
                    "window_center",
                    gr.Number(60, elem_id="hc-center", min_width=90, **component_args("window_center", "en")),
                )
                e["width"] = add(
                    "window_width",
                    gr.Number(400, elem_id="hc-width", min_width=90, **component_args("window_width", "en")),
                )
            e["zoom"] = add(
                "zoom", gr.Slider(1, 4, step=0.25, value=1, elem_id="hc-zoom", **component_args("zoom", "en"))
            )
            e["overlay"] = add(
                "overlay", gr.Checkbox(True, elem_id="hc-overlay", **component_args("overlay", "en"))
            )
            e["findings_md"] = gr.Markdown(elem_id="hc-findings")
            e["finding"] = add(
                "finding_pick", gr.Dropdown([], elem_id="hc-finding", **component_args("finding_pick", "en"))
            )
            e["goto"] = add(
                "go_to_finding",
                gr.Button(size="sm", elem_id="hc-goto", **component_args("go_to_finding", "en")),
            )
            with gr.Row():
                e["accept"] = add(
                    "accept",
                    gr.Button(
                        size="sm", variant="primary", elem_id="hc-accept", **component_args("accept", "en")
                    ),
                )
                e["reject"] = add(
                    "reject",
                    gr.Button(
                        size="sm", variant="stop", elem_id="hc-reject", **component_args("reject", "en")
                    ),
                )
            with gr.Row():
                e["amend_label"] = add(
                    "amend_label",
                    gr.Textbox(
                        elem_id="hc-amend-label", min_width=120, **component_args("amend_label", "en")
                    ),
                )
                e["amend"] = add(
                    "amend", gr.Button(size="sm", elem_id="hc-amend", **component_args("amend", "en"))
                )
    gr.HTML("", js_on_load="Hoichan.sliceKeys();", head=engine.head(), visible="hidden")


def _slide_viewer(engine: Engine, e: Elements) -> None:
    add = engine.manager.add
    with gr.Row():
        e["slide"] = add(
            "slide_pick", gr.Dropdown([], elem_id="hc-slide", scale=3, **component_args("slide_pick", "en"))
        )
        e["opacity"] = add(
            "heatmap_opacity",
            gr.Slider(
                0,
                1,
                value=0.4,
                step=0.05,
                elem_id="hc-opacity",
                scale=2,
                **component_args("heatmap_opacity", "en"),
            ),
        )
    e["osd"] = gr.HTML(
        "{}",
        html_template="<div class='hc-osd' id='hc-osd'></div><div class='hc-osd-status'></div>",
        js_on_load="Hoichan.slideViewer(element, props, watch);",
        head=engine.head(),
        elem_id="hc-osd-box",
    )
    e["tiles"] = add(
        "top_tiles",
        gr.Gallery(
            columns=6,
            height=160,
            allow_preview=False,
            elem_id="hc-top-tiles",
            **component_args("top_tiles", "en"),
        ),
    )
    e["slide_state"] = gr.State({})


def _opinion_editor(engine: Engine, e: Elements) -> None:
    add = engine.manager.add
    e["op_status"] = gr.Markdown(elem_id="hc-opinion-status")
    e["op_findings"] = add(
        "op_findings", gr.Textbox(lines=5, elem_id="hc-op-findings", **component_args("op_findings", "en"))
    )
    e["op_impression"] = add(
        "op_impression",
        gr.Textbox(lines=3, elem_id="hc-op-impression", **component_args("op_impression", "en")),
    )
    e["op_recommendations"] = add(
        "op_recommendations",
        gr.Textbox(lines=2, elem_id="hc-op-recommendations", **component_args("op_recommendations", "en")),
    )
    with gr.Row():
        e["save"] = add(
            "save_draft", gr.Button(elem_id="hc-save-draft", **component_args("save_draft", "en"))
        )
        e["sign"] = add(
            "sign", gr.Button(variant="primary", elem_id="hc-sign", **component_args("sign", "en"))
        )
    e["pdf"] = add(
        "opinion_pdf",
        gr.File(interactive=False, elem_id="hc-opinion-pdf", **component_args("opinion_pdf", "en")),
    )
    with gr.Row():
        e["info_text"] = add(
            "info_request",
            gr.Textbox(elem_id="hc-info-text", scale=3, **component_args("info_request", "en")),
        )
        e["request_info"] = add(
            "request_info", gr.Button(elem_id="hc-request-info", **component_args("request_info", "en"))
        )


# ---- handlers -------------------------------------------------------------------------------


def _findings_md(session: UserSession, findings: list[dict[str, Any]] | None) -> str:
    if findings is None:
        return text(session.lang, "findings_missing")
    if not findings:
        return text(session.lang, "no_findings")
    lines = []
    for f in findings:
        label, _ = render.finding_choice(f)
        model = f"{f.get('model_name') or ''} {f.get('model_version') or ''}".strip()
        lines.append(f"- **{label}** {model}")
    return "\n".join(lines)


def _opinion_fields(engine: Engine, session: UserSession, case: dict[str, Any]) -> tuple[Any, ...]:
    """(status text, findings, impression, recommendations, pdf path, editable) of the user's opinion."""
    opinions = engine.api(session).opinions(case["id"])
    signed = [o for o in opinions if o["status"] == "signed"]
    mine = [o for o in opinions if o["status"] == "draft" and o["author_id"] == session.user["id"]]
    current = signed[-1] if signed else (mine[-1] if mine else None)
    if current is None:
        return ("", "", "", "", None, case["status"] == "in_review")
    pdf = _pdf(engine, session, case["id"], current["id"]) if current["status"] == "signed" else None
    status = (
        f"**{current['status']}** {current.get('signed_at') or ''} `{current.get('content_sha256') or ''}`"
    )
    return (
        status,
        current["findings"],
        current["impression"],
        current["recommendations"],
        pdf,
        current["status"] == "draft",
    )


def _pdf(engine: Engine, session: UserSession, case_id: str, opinion_id: str) -> str | None:
    if not engine.capabilities().opinion_pdf:
        return None
    data = engine.api(session).opinion_pdf(case_id, opinion_id)
    folder = Path(tempfile.gettempdir()) / "hoichan-viewer" / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"opinion-{opinion_id[:8]}.pdf"
    path.write_bytes(data)
    return str(path)


def _series_update(view: SliceView) -> Any:
    choices = [(s.label, i) for i, s in enumerate(view.series)]
    return gr.update(choices=choices, value=view.series_index if choices else None)


def _slider_update(view: SliceView) -> Any:
    return gr.update(minimum=1, maximum=max(view.slice_count, 2), value=view.slice_index + 1)


def _finding_choices(findings: list[dict[str, Any]] | None) -> Any:
    choices = [render.finding_choice(f) for f in findings or []]
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def _slides(engine: Engine, session: UserSession, case_id: str) -> Any:
    if not engine.capabilities().slides:
        return gr.update(choices=[], value=None)
    slides = engine.api(session).case_slides(case_id)
    choices = [(f"{s['filename']} ({s['width']} x {s['height']})", s["id"]) for s in slides]
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


OPEN_OUTPUTS = [
    "header",
    "timeline",
    "series",
    "slider",
    "image",
    "info",
    "findings_md",
    "finding",
    "op_status",
    "op_findings",
    "op_impression",
    "op_recommendations",
    "pdf",
    "start",
    "video",
    "sign",
    "save",
    "slide",
    "message",
]
"""The review page's outputs when a case opens, in the order ``open_case`` returns them."""


def open_case(engine: Engine, session: UserSession | None, case_id: str) -> tuple[Any, ...]:
    """Everything the review page shows for one case; returns (case, view, *OPEN_OUTPUTS)."""
    user = _specialist(session)
    api = engine.api(user)
    case = api.case(case_id)
    view = SliceView(case_id=case_id, series=engine.load_series(user, case))
    view.findings = engine.findings(user, case_id) or []
    findings = engine.findings(user, case_id) if engine.capabilities().findings else None
    image, info = engine.render_slice(user, view)
    status, op_f, op_i, op_r, pdf, editable = _opinion_fields(engine, user, case)
    caps = engine.capabilities()
    allowed = case.get("allowed_transitions", [])
    values = {
        "header": engine.case_header(user, case),
        "timeline": render.timeline_md(api.timeline(case_id), user.lang),
        "series": _series_update(view),
        "slider": _slider_update(view),
        "image": image,
        "info": info,
        "findings_md": _findings_md(user, findings),
        "finding": _finding_choices(findings),
        "op_status": status,
        "op_findings": gr.update(value=op_f, interactive=editable),
        "op_impression": gr.update(value=op_i, interactive=editable),
        "op_recommendations": gr.update(value=op_r, interactive=editable),
        "pdf": pdf,
        "start": gr.update(visible="in_review" in allowed and case["status"] != "needs_info"),
        "video": gr.update(visible=caps.sessions),
        "sign": gr.update(interactive=editable),
        "save": gr.update(interactive=editable),
        "slide": _slides(engine, user, case_id),
        "message": "",
    }
    return (case, view, *[values[k] for k in OPEN_OUTPUTS])


def show(engine: Engine, session: UserSession | None, view: SliceView) -> tuple[Any, ...]:
    """(view, slider, image, info) after a change of slice, window, zoom or overlay."""
    user = _specialist(session)
    image, info = engine.render_slice(user, view)
    return view, _slider_update(view), image, info


def window_from_preset(preset: str, center: float, width: float) -> tuple[float, float]:
    return WINDOW_PRESETS.get(preset, (float(center or 0), float(width or 1)))


def finding_slice(view: SliceView, finding_id: str) -> SliceView:
    """The view moved to the series and slice a finding points at."""
    finding = next((f for f in view.findings if str(f.get("id")) == finding_id), None)
    if finding is None:
        return view
    where = finding.get("amended_location") or finding.get("location") or {}
    for s_index, series in enumerate(view.series):
        if finding.get("series_instance_uid") not in (None, series.series_uid):
            continue
        if where.get("sop_instance_uid") in series.instances:
            return dataclasses.replace(
                view, series_index=s_index, slice_index=series.instances.index(where["sop_instance_uid"])
            )
        if "slice_index" in where:
            return dataclasses.replace(view, series_index=s_index, slice_index=int(where["slice_index"]))
    return view


def slide_config(engine: Engine, session: UserSession, state: dict[str, Any]) -> str:
    """The slide viewer's JSON value: API base and token, slide, heatmap opacity, a jump target."""
    return engine.browser_config(session, assets=engine.assets_url, **state)


def slide_tiles(view: SliceView, slide_id: str | None) -> list[tuple[dict[str, int], str]]:
    """(level-0 box, caption) of the slide's top tiles, highest score first.

    The slide triage stores each finding's best tiles in ``location.top_tiles``; a finding without
    them (older runs, specialist findings) contributes its ``bbox``."""
    ranked: list[tuple[float, dict[str, int], str]] = []
    for finding in view.findings:
        where = finding.get("location") or {}
        if not slide_id or finding.get("slide_id") != slide_id:
            continue
        label = str(finding.get("amended_label") or finding.get("label") or "")
        boxes = where.get("top_tiles") or (
            [{**where["bbox"], "score": finding.get("score")}] if where.get("bbox") else []
        )
        for box in boxes:
            score = float(box.get("score") or 0)
            rect = {k: int(box[k]) for k in ("x", "y", "width", "height")}
            ranked.append((score, rect, f"{label} {score:.2f}"))
    ranked.sort(key=lambda t: -t[0])
    return [(rect, caption) for _, rect, caption in ranked[:MAX_TOP_TILES]]


def top_tiles(engine: Engine, session: UserSession, view: SliceView, slide_id: str) -> list[tuple[Any, str]]:
    """Image regions of the slide's top tiles, highest score first (thumbnails for the gallery)."""
    api = engine.api(session)
    return [
        (_jpeg_image(api.slide_region(slide_id, rect["x"], rect["y"], TOP_TILE_SIDE)), caption)
        for rect, caption in slide_tiles(view, slide_id)
    ]


def slide_heatmap(engine: Engine, session: UserSession, view: SliceView, slide_id: str) -> dict[str, Any]:
    """The overlay of the slide's highest-scoring finding with a heatmap: data URL and its caption."""
    candidates = [f for f in view.findings if f.get("slide_id") == slide_id and f.get("heatmap_sha256")]
    if not candidates:
        return {"heatmap": None, "label": ""}
    best = max(candidates, key=lambda f: float(f.get("score") or 0))
    url = engine.heatmap_url(session, view.case_id, best)
    caption = f"{best.get('label', '')} {float(best.get('score') or 0):.2f} {best.get('model_name') or ''}"
    return {"heatmap": url, "label": caption.strip() if url else ""}


def _jpeg_image(data: bytes) -> Image.Image:
    import io

    return Image.open(io.BytesIO(data)).convert("RGB")


def _warn(session: UserSession | None, exc: Exception, outputs: int) -> tuple[Any, ...]:
    """A toast with the reason, and no change to the page."""
    gr.Warning(error_text(session, exc))
    return tuple(gr.update() for _ in range(outputs))


def wire_review(engine: Engine, e: Elements, session: gr.State, view: gr.State, case: gr.State) -> None:
    """Events of the review page; every handler re-checks the role and lets the API decide the rest."""
    shown = [view, e["slider"], e["image"], e["info"]]

    def redraw(s: UserSession | None, v: SliceView, **changes: Any) -> tuple[Any, ...]:
        try:
            new = dataclasses.replace(v, **changes)
            if new.slice_count:
                new.slice_index = min(max(new.slice_index, 0), new.slice_count - 1)
            return show(engine, s, new)
        except HANDLED as exc:
            return _warn(s, exc, 4)

    e["prev"].click(lambda s, v: redraw(s, v, slice_index=v.slice_index - 1), [session, view], shown)
    e["next"].click(lambda s, v: redraw(s, v, slice_index=v.slice_index + 1), [session, view], shown)
    e["slider"].release(
        lambda s, v, n: redraw(s, v, slice_index=int(n) - 1), [session, view, e["slider"]], shown
    )
    e["series"].input(
        lambda s, v, i: redraw(s, v, series_index=int(i or 0), slice_index=0),
        [session, view, e["series"]],
        shown,
    )
    e["zoom"].release(lambda s, v, z: redraw(s, v, zoom=float(z)), [session, view, e["zoom"]], shown)
    e["overlay"].input(lambda s, v, o: redraw(s, v, overlay=bool(o)), [session, view, e["overlay"]], shown)

    def preset(s: UserSession | None, v: SliceView, name: str, c: float, w: float) -> tuple[Any, ...]:
        window = window_from_preset(name, c, w)
        return (*redraw(s, v, window=window), window[0], window[1])

    e["preset"].input(
        preset, [session, view, e["preset"], e["center"], e["width"]], [*shown, e["center"], e["width"]]
    )

    def custom(s: UserSession | None, v: SliceView, c: float, w: float) -> tuple[Any, ...]:
        return (*redraw(s, v, window=(float(c or 0), max(float(w or 1), 1.0))), "custom")

    for box in (e["center"], e["width"]):
        box.submit(custom, [session, view, e["center"], e["width"]], [*shown, e["preset"]])

    def centre(s: UserSession | None, v: SliceView, evt: gr.SelectData) -> tuple[Any, ...]:
        x, y = evt.index
        side = render.DISPLAY_SIDE
        box = render.crop_for_zoom((side, side), v.zoom, v.centre)
        fx = (box[0] + x / v.zoom) / side
        fy = (box[1] + y / v.zoom) / side
        return redraw(s, v, centre=(fx, fy))

    e["image"].select(centre, [session, view], shown)

    def goto(s: UserSession | None, v: SliceView, finding_id: str | None) -> tuple[Any, ...]:
        moved = finding_slice(v, finding_id or "")
        try:
            return (*show(engine, s, moved), _series_update(moved))
        except HANDLED as exc:
            return _warn(s, exc, 5)

    e["goto"].click(goto, [session, view, e["finding"]], [*shown, e["series"]])

    def review(decision: str) -> Any:
        def handler(
            s: UserSession | None, v: SliceView, c: dict[str, Any] | None, fid: str | None, label: str
        ) -> tuple[Any, ...]:
            try:
                user = _specialist(s)
                body: dict[str, Any] = {"label": label} if decision == "amend" and label else {}
                api = engine.api(user)
                done = api.review_finding(str((c or {}).get("id")), str(fid), decision, body)
                findings = api.findings(str((c or {}).get("id")))
                new = dataclasses.replace(v, findings=findings)
                msg = text(user.lang, "reviewed", id=str(fid)[:8], state=done.get("state", decision))
                return (new, _findings_md(user, findings), _finding_choices(findings), msg)
            except HANDLED as exc:
                return _warn(s, exc, 4)

        return handler

    review_out = [view, e["findings_md"], e["finding"], e["message"]]
    review_in = [session, view, case, e["finding"], e["amend_label"]]
    e["accept"].click(review("accept"), review_in, review_out)
    e["reject"].click(review("reject"), review_in, review_out)
    e["amend"].click(review("amend"), review_in, review_out)
    _wire_case_actions(engine, e, session, view, case)
    _wire_slides(engine, e, session, view)


def _wire_case_actions(
    engine: Engine, e: Elements, session: gr.State, view: gr.State, case: gr.State
) -> None:
    opened = [case, view, *[e[k] for k in OPEN_OUTPUTS]]

    def reopen(s: UserSession | None, c: dict[str, Any] | None, message: str) -> tuple[Any, ...]:
        result = open_case(engine, s, str((c or {}).get("id")))
        return (*result[:-1], message)

    def act(call: Any) -> Any:
        def handler(s: UserSession | None, c: dict[str, Any] | None, *args: Any) -> tuple[Any, ...]:
            try:
                user = _specialist(s)
                message = call(engine.api(user), str((c or {}).get("id")), user, *args)
                return reopen(user, c, message)
            except HANDLED as exc:
                return _warn(s, exc, len(opened))

        return handler

    def start(api: Any, case_id: str, user: UserSession) -> str:
        api.change_status(case_id, "in_review")
        return text(user.lang, "review_started")

    def save(api: Any, case_id: str, user: UserSession, f: str, i: str, r: str) -> str:
        _save_draft(api, case_id, user, f, i, r)
        return text(user.lang, "saved")

    def sign(api: Any, case_id: str, user: UserSession, f: str, i: str, r: str) -> str:
        draft = _save_draft(api, case_id, user, f, i, r)
        api.sign_opinion(case_id, draft["id"])
        return text(user.lang, "signed")

    def ask(api: Any, case_id: str, user: UserSession, what: str) -> str:
        api.change_status(case_id, "needs_info", what)
        return text(user.lang, "info_requested")

    def video(api: Any, case_id: str, user: UserSession) -> str:
        live = [s for s in api.case_sessions(case_id) if s.get("status") in ("scheduled", "live", "active")]
        session = live[0] if live else api.start_session(case_id, f"Case {case_id[:8]}")
        joined = api.join_session(session["id"])
        page = f"{engine.public_api_url}/api/v1/sessions/{joined.get('session_id', session['id'])}/page"
        return text(user.lang, "video_started", url=page)

    fields = [e["op_findings"], e["op_impression"], e["op_recommendations"]]
    e["start"].click(act(start), [session, case], opened)
    e["save"].click(act(save), [session, case, *fields], opened)
    e["sign"].click(act(sign), [session, case, *fields], opened)
    e["request_info"].click(act(ask), [session, case, e["info_text"]], opened)
    e["video"].click(act(video), [session, case], opened)


def _save_draft(api: Any, case_id: str, user: UserSession, f: str, i: str, r: str) -> dict[str, Any]:
    body = {"findings": f or "", "impression": i or "", "recommendations": r or ""}
    drafts = [
        o for o in api.opinions(case_id) if o["status"] == "draft" and o["author_id"] == user.user["id"]
    ]
    if drafts:
        return dict(api.edit_opinion(case_id, drafts[-1]["id"], body))
    return dict(api.create_opinion(case_id, body))


def _wire_slides(engine: Engine, e: Elements, session: gr.State, view: gr.State) -> None:
    def choose(s: UserSession | None, v: SliceView, slide_id: str | None, opacity: float) -> tuple[Any, ...]:
        try:
            user = _specialist(s)
            state: dict[str, Any] = {"slide_id": slide_id, "opacity": opacity, "seq": 0}
            if slide_id:
                state.update(slide_heatmap(engine, user, v, slide_id))
            tiles = top_tiles(engine, user, v, slide_id) if slide_id else []
            message = "" if slide_id else text(user.lang, "no_slides")
            return slide_config(engine, user, {**state, "message": message}), tiles, state
        except HANDLED as exc:
            return _warn(s, exc, 3)

    e["slide"].change(
        choose, [session, view, e["slide"], e["opacity"]], [e["osd"], e["tiles"], e["slide_state"]]
    )

    def opacity(s: UserSession | None, state: dict[str, Any], value: float) -> tuple[Any, ...]:
        if s is None or not state.get("slide_id"):
            return gr.update(), state
        new = {**state, "opacity": value}
        return slide_config(engine, s, new), new

    e["opacity"].release(opacity, [session, e["slide_state"], e["opacity"]], [e["osd"], e["slide_state"]])

    def jump(
        s: UserSession | None, v: SliceView, state: dict[str, Any], evt: gr.SelectData
    ) -> tuple[Any, ...]:
        tiles = slide_tiles(v, state.get("slide_id"))
        index = evt.index if isinstance(evt.index, int) else -1
        if s is None or not 0 <= index < len(tiles):
            return gr.update(), state
        new = {**state, "goto": tiles[index][0], "seq": int(state.get("seq", 0)) + 1}
        return slide_config(engine, s, new), new

    e["tiles"].select(jump, [session, view, e["slide_state"]], [e["osd"], e["slide_state"]])
