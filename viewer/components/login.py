"""Sign-in with the API's OAuth2 password flow; the token goes into the user's ``gr.State``."""

from __future__ import annotations

import gradio as gr

from viewer.components.common import Elements
from viewer.engine import Engine
from viewer.i18n import component_args


def create_login(engine: Engine) -> Elements:
    add = engine.manager.add
    with gr.Column(elem_id="hc-login", scale=0, min_width=320) as column:
        username = add("username", gr.Textbox(elem_id="hc-username", **component_args("username", "en")))
        password = add(
            "password",
            gr.Textbox(type="password", elem_id="hc-password", **component_args("password", "en")),
        )
        button = add(
            "sign_in", gr.Button(variant="primary", elem_id="hc-sign-in", **component_args("sign_in", "en"))
        )
        message = gr.Markdown(elem_id="hc-login-message")
    return {
        "column": column,
        "username": username,
        "password": password,
        "button": button,
        "message": message,
    }
