"""Referrer pages: create a case, upload DICOM (files, a folder or a zip) and slides (resumable, tus
in the page), submit, follow the status, answer requests for information, read the signed opinion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from viewer import render
from viewer.components.common import HANDLED, Elements, error_text, require
from viewer.engine import Engine
from viewer.i18n import component_args, text
from viewer.state import UserSession

KINDS = ["imaging", "pathology", "advice", "clinical", "surgery", "training"]
UPLOAD_BATCH = 20
TUS_TEMPLATE = (
    "<div class='hc-tus'><input type='file' class='hc-tus-file' id='hc-tus-file'>"
    "<button class='hc-tus-start lg secondary' id='hc-tus-start' type='button'>Upload slide</button>"
    "<button class='hc-tus-pause lg secondary' id='hc-tus-pause' type='button'>Pause</button>"
    "<progress class='hc-tus-bar' id='hc-tus-bar' max='100' value='0'></progress>"
    "<span class='hc-tus-status' id='hc-tus-status'></span></div>"
)


def _referrer(session: UserSession | None) -> UserSession:
    return require(session, lambda s: s.is_referrer)


def create_referrer_tab(engine: Engine) -> Elements:
    add = engine.manager.add
    e: Elements = {}
    with gr.Tab(id="referrals", visible=False, **component_args("tab_referrals", "en")) as tab:
        add("tab_referrals", tab)
        e["tab"] = tab
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                e["kind"] = add(
                    "case_kind",
                    gr.Dropdown(
                        KINDS, value="imaging", elem_id="hc-new-kind", **component_args("case_kind", "en")
                    ),
                )
                e["target"] = add(
                    "target", gr.Dropdown([], elem_id="hc-new-target", **component_args("target", "en"))
                )
                e["patient_id"] = add(
                    "patient_id",
                    gr.Textbox(elem_id="hc-new-patient-id", **component_args("patient_id", "en")),
                )
                e["patient_name"] = add(
                    "patient_name",
                    gr.Textbox(elem_id="hc-new-patient-name", **component_args("patient_name", "en")),
                )
                e["question"] = add(
                    "question",
                    gr.Textbox(lines=2, elem_id="hc-new-question", **component_args("question", "en")),
                )
                e["notes"] = add("notes", gr.Textbox(lines=2, **component_args("notes", "en")))
                e["urgent"] = add("urgent", gr.Checkbox(**component_args("urgent", "en")))
                e["create"] = add(
                    "create_case",
                    gr.Button(
                        variant="primary", elem_id="hc-create-case", **component_args("create_case", "en")
                    ),
                )
            with gr.Column(scale=2, min_width=320):
                with gr.Row():
                    e["case"] = add(
                        "my_case",
                        gr.Dropdown([], elem_id="hc-my-case", scale=4, **component_args("my_case", "en")),
                    )
                    e["refresh"] = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id="hc-my-refresh")
                e["status"] = gr.Markdown(elem_id="hc-my-status")
                e["message"] = gr.Markdown(elem_id="hc-my-message")
                e["files"] = add(
                    "dicom_files",
                    gr.File(
                        file_count="multiple", elem_id="hc-dicom-files", **component_args("dicom_files", "en")
                    ),
                )
                e["upload"] = add(
                    "upload_dicom",
                    gr.Button(elem_id="hc-upload-dicom", **component_args("upload_dicom", "en")),
                )
                e["tus"] = gr.HTML(
                    "{}",
                    html_template=TUS_TEMPLATE,
                    head=engine.head(),
                    elem_id="hc-tus-box",
                    js_on_load="Hoichan.tusUpload(element, props, watch, trigger);",
                )
                e["submit"] = add(
                    "submit_case",
                    gr.Button(
                        variant="primary", elem_id="hc-submit-case", **component_args("submit_case", "en")
                    ),
                )
                with gr.Row():
                    e["reply"] = add(
                        "reply", gr.Textbox(scale=3, elem_id="hc-reply", **component_args("reply", "en"))
                    )
                    e["send_reply"] = add(
                        "send_reply", gr.Button(elem_id="hc-send-reply", **component_args("send_reply", "en"))
                    )
                e["opinion"] = gr.Markdown(elem_id="hc-my-opinion")
                e["pdf"] = add(
                    "opinion_pdf",
                    gr.File(interactive=False, elem_id="hc-my-pdf", **component_args("opinion_pdf", "en")),
                )
    return e


def load_choices(engine: Engine, session: UserSession, selected: str | None = None) -> tuple[Any, Any]:
    """(target facilities, the user's cases) for the two pickers."""
    api = engine.api(session)
    own = session.user.get("facility_id")
    targets = [(f"{f['name']} ({f['code']})", f["id"]) for f in api.facilities() if f["id"] != own]
    cases = api.cases(limit=100)["items"]
    mine = [(f"{c['kind']} · {c['status']} · {c['clinical_question'][:40]}", c["id"]) for c in cases]
    value = selected if selected in {c[1] for c in mine} else (mine[0][1] if mine else None)
    return (
        gr.update(choices=targets, value=targets[0][1] if targets else None),
        gr.update(choices=mine, value=value),
    )


def case_panel(engine: Engine, session: UserSession, case_id: str | None) -> tuple[Any, ...]:
    """(status, timeline-ish summary, opinion text, pdf, tus config) of one of the user's cases."""
    if not case_id:
        return ("", "", None, engine.browser_config(session))
    api = engine.api(session)
    case = api.case(case_id)
    events = render.timeline_md(api.timeline(case_id), session.lang)
    status = f"### {case['status']} · {case['priority']}\n\n> {case['clinical_question']}\n\n{events}"
    signed = [o for o in api.opinions(case_id) if o["status"] == "signed"]
    if not signed:
        opinion, pdf = text(session.lang, "no_opinion"), None
    else:
        last = signed[-1]
        opinion = (
            f"**{last['signed_at']}**\n\n{last['findings']}\n\n**{last['impression']}**\n\n"
            f"{last['recommendations']}"
        )
        from viewer.components.review import _pdf

        pdf = _pdf(engine, session, case_id, last["id"])
    return (status, opinion, pdf, engine.browser_config(session, case_id=case_id))


def wire_referrer(engine: Engine, e: Elements, session: gr.State) -> None:
    panel = [e["status"], e["opinion"], e["pdf"], e["tus"]]

    def show(s: UserSession | None, case_id: str | None) -> tuple[Any, ...]:
        try:
            return case_panel(engine, _referrer(s), case_id)
        except HANDLED as exc:
            return (error_text(s, exc), "", None, "{}")

    e["case"].change(show, [session, e["case"]], panel)

    def refresh(s: UserSession | None, case_id: str | None) -> tuple[Any, ...]:
        try:
            return load_choices(engine, _referrer(s), case_id)
        except HANDLED as exc:
            gr.Warning(error_text(s, exc))
            return gr.update(), gr.update()

    e["refresh"].click(refresh, [session, e["case"]], [e["target"], e["case"]])

    def create(
        s: UserSession | None,
        kind: str,
        target: str,
        pid: str,
        name: str,
        question: str,
        notes: str,
        urgent: bool,
    ) -> tuple[Any, ...]:
        try:
            user = _referrer(s)
            body = {
                "kind": kind,
                "target_facility_id": target,
                "clinical_question": question,
                "clinical_notes": notes or "",
                "urgent": bool(urgent),
                "patient": {"identifier": pid, "name": name},
            }
            created = engine.api(user).create_case(body)
            targets, cases = load_choices(engine, user, created["id"])
            return targets, cases, text(user.lang, "created", id=created["id"][:8])
        except HANDLED as exc:
            return gr.update(), gr.update(), error_text(s, exc)

    e["create"].click(
        create,
        [
            session,
            e["kind"],
            e["target"],
            e["patient_id"],
            e["patient_name"],
            e["question"],
            e["notes"],
            e["urgent"],
        ],
        [e["target"], e["case"], e["message"]],
    )

    def upload(
        s: UserSession | None,
        case_id: str | None,
        files: list[str] | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        try:
            user = _referrer(s)
            paths = [Path(f) for f in files or []]
            totals = {"stored": 0, "duplicates": 0, "failed": 0}
            for start in range(0, len(paths), UPLOAD_BATCH):
                progress(start / max(len(paths), 1), desc="DICOM")
                report = engine.api(user).upload_dicom(str(case_id), paths[start : start + UPLOAD_BATCH])
                for key in totals:
                    totals[key] += int(report.get(key, 0))
            progress(1.0)
            return (text(user.lang, "uploaded", **totals), *case_panel(engine, user, case_id))
        except HANDLED as exc:
            return (error_text(s, exc), *[gr.update()] * 4)

    e["upload"].click(upload, [session, e["case"], e["files"]], [e["message"], *panel])

    def status_change(target: str, message_key: str) -> Any:
        def handler(
            s: UserSession | None, case_id: str | None, comment: str | None = None
        ) -> tuple[Any, ...]:
            try:
                user = _referrer(s)
                api = engine.api(user)
                if comment:
                    api.update_case(
                        str(case_id), {"clinical_notes": _append_note(api, str(case_id), comment)}
                    )
                api.change_status(str(case_id), target, comment or None)
                return (text(user.lang, message_key), *case_panel(engine, user, case_id))
            except HANDLED as exc:
                return (error_text(s, exc), *[gr.update()] * 4)

        return handler

    e["submit"].click(status_change("submitted", "submitted"), [session, e["case"]], [e["message"], *panel])
    e["send_reply"].click(
        status_change("in_review", "submitted"), [session, e["case"], e["reply"]], [e["message"], *panel]
    )

    def uploaded(s: UserSession | None, case_id: str | None, evt: gr.EventData) -> tuple[Any, ...]:
        data = getattr(evt, "_data", None) or {}
        try:
            user = _referrer(s)
            return (
                f"{data.get('filename', '')}: {data.get('slide_location', '')}",
                *case_panel(engine, user, case_id),
            )
        except HANDLED as exc:
            return (error_text(s, exc), *[gr.update()] * 4)

    e["tus"].upload(uploaded, [session, e["case"]], [e["message"], *panel])


def _append_note(api: Any, case_id: str, comment: str) -> str:
    notes = str(api.case(case_id).get("clinical_notes", ""))
    return f"{notes}\n\n{comment}".strip()
