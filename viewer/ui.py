"""``create_ui``: assembles the pages built in ``viewer/components`` around one ``Engine``.

Pages by role: specialists get the worklist and case review, referrers their referrals, ML engineers
the model page. Hidden tabs are a convenience, not the guard: every handler re-checks the role from
the session, and the API checks everything again with the user's own token.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from viewer.client import ApiError
from viewer.components import review as review_page
from viewer.components.common import HANDLED, Elements, error_text
from viewer.components.login import create_login
from viewer.components.models import create_models_tab, load_models, wire_models
from viewer.components.referrer import create_referrer_tab, load_choices, wire_referrer
from viewer.components.review import OPEN_OUTPUTS, create_review_tab, wire_review
from viewer.components.worklist import create_worklist_tab, load_worklist, wire_worklist
from viewer.engine import Engine
from viewer.i18n import LANGUAGES, component_args, text
from viewer.state import SliceView, UserSession

DEFAULT_ASSETS_URL = "/viewer-assets"


def create_ui(
    api_url: str, *, public_api_url: str | None = None, assets_url: str = DEFAULT_ASSETS_URL
) -> gr.Blocks:
    """The viewer for the API at ``api_url``.

    ``public_api_url`` is where the browser reaches the same API for tiles and tus uploads: empty
    when the viewer is mounted in the API's own app (same origin), ``api_url`` when standalone.
    """
    engine = Engine(api_url, api_url if public_api_url is None else public_api_url, assets_url)
    return build(engine)


def build(engine: Engine) -> gr.Blocks:
    with gr.Blocks(title="Hoichan", fill_width=True) as demo:
        session = gr.State(None)
        view = gr.State(SliceView())
        case = gr.State(None)
        with gr.Row(equal_height=False):
            gr.Markdown(f"## {text('en', 'title')}", elem_id="hc-title")
            who = gr.Markdown(elem_id="hc-who")
            lang = gr.Radio(
                list(LANGUAGES), value="en", show_label=False, elem_id="hc-lang", scale=0, min_width=170
            )
            sign_out = engine.manager.add(
                "sign_out",
                gr.Button(
                    visible=False,
                    size="sm",
                    scale=0,
                    elem_id="hc-sign-out",
                    **component_args("sign_out", "en"),
                ),
            )
        login = create_login(engine)
        with gr.Tabs(visible=False, elem_id="hc-tabs") as tabs:
            worklist = create_worklist_tab(engine)
            review = create_review_tab(engine)
            referrer = create_referrer_tab(engine)
            models = create_models_tab(engine)
        pages = {"worklist": worklist, "review": review, "referrer": referrer, "models": models}
        _wire_session(engine, session, lang, who, sign_out, login, tabs, pages)
        _wire_open_case(engine, session, view, case, tabs, worklist, review)
        wire_worklist(engine, worklist, session)
        wire_review(engine, review, session, view, case)
        wire_referrer(engine, referrer, session)
        wire_models(engine, models, session)
    return demo


def _landing(session: UserSession) -> str:
    if session.is_specialist:
        return "worklist"
    if session.is_referrer:
        return "referrals"
    return "models"


def _wire_session(
    engine: Engine,
    session: gr.State,
    lang: gr.Radio,
    who: gr.Markdown,
    sign_out: gr.Button,
    login: Elements,
    tabs: gr.Tabs,
    pages: dict[str, Elements],
) -> None:
    worklist, referrer, models = pages["worklist"], pages["referrer"], pages["models"]
    page_outputs = [
        worklist["table"],
        referrer["target"],
        referrer["case"],
        models["models_md"],
        models["models"],
        models["agreement_md"],
        models["agreement"],
    ]
    outputs = [
        session,
        login["column"],
        tabs,
        *[p["tab"] for p in pages.values()],
        who,
        sign_out,
        login["message"],
        *page_outputs,
    ]

    def sign_in(username: str, password: str, language: str) -> tuple[Any, ...]:
        try:
            user = engine.sign_in(username, password, language)
        except ApiError as exc:
            message = text(language, "bad_login") if exc.status in (400, 401) else error_text(None, exc)
            return (None, *[gr.update()] * 8, message, *[gr.update()] * len(page_outputs))
        except HANDLED as exc:
            return (None, *[gr.update()] * 8, error_text(None, exc), *[gr.update()] * len(page_outputs))
        return _signed_in(engine, user)

    login["button"].click(sign_in, [login["username"], login["password"], lang], outputs)
    login["password"].submit(sign_in, [login["username"], login["password"], lang], outputs)

    def leave() -> tuple[Any, ...]:
        hidden = [gr.update(visible=False)] * 4
        return (
            None,
            gr.update(visible=True),
            gr.update(visible=False),
            *hidden,
            "",
            gr.update(visible=False),
            "",
            *[gr.update()] * len(page_outputs),
        )

    sign_out.click(leave, None, outputs)

    def switch(language: str, current: UserSession | None) -> tuple[Any, ...]:
        if current is not None:
            current.lang = language
        return (*engine.relabel(language), current)

    lang.change(switch, [lang, session], [*engine.manager.components(), session]).then(
        lambda s, *f: load_worklist(engine, s, *f) if s is not None and s.is_specialist else gr.update(),
        [session, worklist["status"], worklist["kind"], worklist["priority"], worklist["mine"]],
        worklist["table"],
    )


def _signed_in(engine: Engine, user: UserSession) -> tuple[Any, ...]:
    roles = ", ".join(sorted(user.roles))
    who = text(
        user.lang, "signed_in_as", name=user.user.get("full_name") or user.user["username"], roles=roles
    )
    table = (
        load_worklist(engine, user, ["submitted", "triaged", "in_review", "needs_info"], [], [], False)
        if user.is_specialist
        else ""
    )
    targets, cases = load_choices(engine, user) if user.is_referrer else (gr.update(), gr.update())
    model_values = load_models(engine, user) if user.is_ml else (gr.update(),) * 4
    visible = [user.is_specialist, user.is_specialist, user.is_referrer, user.is_ml]
    message = "" if any(visible) else text(user.lang, "no_role_page")
    return (
        user,
        gr.update(visible=False),
        gr.Tabs(visible=True, selected=_landing(user)),
        *[gr.update(visible=v) for v in visible],
        who,
        gr.update(visible=True),
        message,
        table,
        targets,
        cases,
        *model_values,
    )


def _wire_open_case(
    engine: Engine,
    session: gr.State,
    view: gr.State,
    case: gr.State,
    tabs: gr.Tabs,
    worklist: Elements,
    review: Elements,
) -> None:
    outputs = [case, view, *[review[k] for k in OPEN_OUTPUTS], tabs]

    def open_selected(s: UserSession | None, evt: gr.EventData) -> tuple[Any, ...]:
        case_id = str((getattr(evt, "_data", None) or {}).get("case_id", ""))
        try:
            return (*review_page.open_case(engine, s, case_id), gr.Tabs(selected="review"))
        except HANDLED as exc:
            gr.Warning(error_text(s, exc))
            return tuple(gr.update() for _ in outputs)

    worklist["table"].select(open_selected, [session], outputs)
