"""ML engineer page: the model registry (cards, versions, metrics, live / shadow) and how often
specialists agree with each model version, per site. Both APIs are optional on the server."""

from __future__ import annotations

from typing import Any

import gradio as gr

from viewer import render
from viewer.components.common import HANDLED, Elements, error_text, require
from viewer.engine import Engine
from viewer.i18n import component_args, text
from viewer.state import UserSession

MODEL_COLUMNS = ["name", "version", "task", "modality", "body_part", "state", "metrics", "onnx_sha256"]
AGREEMENT_COLUMNS = [
    "model_name",
    "model_version",
    "findings",
    "reviewed",
    "accepted",
    "rejected",
    "amended",
    "agreement",
]


def create_models_tab(engine: Engine) -> Elements:
    add = engine.manager.add
    with gr.Tab(id="models", visible=False, **component_args("tab_models", "en")) as tab:
        add("tab_models", tab)
        refresh = gr.Button("↻", size="sm", min_width=40, elem_id="hc-models-refresh")
        models_md = gr.Markdown(elem_id="hc-models-message")
        models = gr.Dataframe(headers=MODEL_COLUMNS, interactive=False, elem_id="hc-models", wrap=True)
        agreement_md = gr.Markdown(elem_id="hc-agreement-message")
        agreement = gr.Dataframe(headers=AGREEMENT_COLUMNS, interactive=False, elem_id="hc-agreement")
    return {
        "tab": tab,
        "refresh": refresh,
        "models_md": models_md,
        "models": models,
        "agreement_md": agreement_md,
        "agreement": agreement,
    }


def load_models(engine: Engine, session: UserSession | None) -> tuple[Any, ...]:
    """(message, registry rows, message, agreement rows); missing APIs are said, not faked."""
    try:
        user = require(session, lambda s: s.is_ml)
        caps = engine.capabilities()
        api = engine.api(user)
        models_msg, model_rows = text(user.lang, "models_missing"), []
        if caps.models:
            models_msg, model_rows = "", render.table_rows(api.models(), MODEL_COLUMNS)
        agree_msg, agree_rows = text(user.lang, "agreement_missing"), []
        if caps.agreement:
            agree_msg, agree_rows = "", render.table_rows(api.agreement(), AGREEMENT_COLUMNS)
        return models_msg, model_rows, agree_msg, agree_rows
    except HANDLED as exc:
        return error_text(session, exc), [], "", []


def wire_models(engine: Engine, e: Elements, session: gr.State) -> None:
    outputs = [e["models_md"], e["models"], e["agreement_md"], e["agreement"]]
    e["refresh"].click(lambda s: load_models(engine, s), [session], outputs)
