"""The specialist worklist: most urgent first, with priority colour, AI result and deadline countdown."""

from __future__ import annotations

from typing import Any

import gradio as gr

from viewer.components.common import HANDLED, Elements, error_text, require
from viewer.engine import Engine
from viewer.i18n import component_args
from viewer.state import UserSession

STATUSES = ["submitted", "triaged", "in_review", "needs_info", "concluded", "closed"]
KINDS = ["advice", "clinical", "imaging", "pathology", "surgery", "training"]
PRIORITIES = ["critical", "urgent", "routine"]


def create_worklist_tab(engine: Engine) -> Elements:
    add = engine.manager.add
    with gr.Tab(id="worklist", visible=False, **component_args("tab_worklist", "en")) as tab:
        add("tab_worklist", tab)
        with gr.Row():
            status = add(
                "filter_status",
                gr.Dropdown(
                    STATUSES,
                    value=["submitted", "triaged", "in_review", "needs_info"],
                    multiselect=True,
                    elem_id="hc-filter-status",
                    **component_args("filter_status", "en"),
                ),
            )
            kind = add(
                "filter_kind", gr.Dropdown(KINDS, multiselect=True, **component_args("filter_kind", "en"))
            )
            priority = add(
                "filter_priority",
                gr.Dropdown(PRIORITIES, multiselect=True, **component_args("filter_priority", "en")),
            )
            mine = add("filter_mine", gr.Checkbox(**component_args("filter_mine", "en")))
            refresh = add(
                "refresh", gr.Button(size="sm", elem_id="hc-refresh", **component_args("refresh", "en"))
            )
        table = gr.HTML(
            "",
            elem_id="hc-worklist",
            js_on_load="Hoichan.worklist(element, trigger);",
            head=engine.head(),
        )
    return {
        "tab": tab,
        "status": status,
        "kind": kind,
        "priority": priority,
        "mine": mine,
        "refresh": refresh,
        "table": table,
    }


def load_worklist(
    engine: Engine,
    session: UserSession | None,
    status: list[str],
    kind: list[str],
    priority: list[str],
    mine: bool,
) -> Any:
    """The worklist HTML for the filters (the API orders it by priority, then deadline)."""
    try:
        user = require(session, lambda s: s.is_specialist)
        filters = {"status": status, "kind": kind, "priority": priority, "assigned_to_me": mine}
        return engine.worklist(user, filters)
    except HANDLED as exc:
        return f"<p class='hc-empty'>{error_text(session, exc)}</p>"


def wire_worklist(engine: Engine, elements: Elements, session: gr.State) -> None:
    inputs = [session, elements["status"], elements["kind"], elements["priority"], elements["mine"]]

    def reload(s: UserSession | None, st: list[str], k: list[str], p: list[str], m: bool) -> Any:
        return load_worklist(engine, s, st, k, p, m)

    for trigger in (
        elements["refresh"].click,
        elements["status"].change,
        elements["kind"].change,
        elements["priority"].change,
        elements["mine"].change,
    ):
        trigger(reload, inputs, elements["table"])
