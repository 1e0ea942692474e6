"""Serving the viewer: inside the API's own app (``hoichan serve``) or in an app of its own
(``hoichan viewer --api URL``). Either way the viewer reaches the API over HTTP only."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from viewer.ui import DEFAULT_ASSETS_URL, create_ui

STATIC_DIR = Path(__file__).parent / "static"
NODE_MODULES = Path(__file__).parent / "node_modules"
VENDOR = {
    "openseadragon": NODE_MODULES / "openseadragon" / "build" / "openseadragon",
    "tus": NODE_MODULES / "tus-js-client" / "dist",
}
"""Browser libraries installed from the npm registry by ``scripts/setup`` (``npm ci --prefix viewer``)."""


def mount_assets(app: FastAPI, assets_url: str = DEFAULT_ASSETS_URL) -> None:
    """The viewer's own scripts and the vendored browser libraries, as static files."""
    for name, folder in VENDOR.items():
        if folder.is_dir():
            app.mount(
                f"{assets_url}/vendor/{name}", StaticFiles(directory=folder), name=f"viewer-vendor-{name}"
            )
    app.mount(assets_url, StaticFiles(directory=STATIC_DIR), name="viewer-assets")


def mount_viewer(app: FastAPI, api_url: str, path: str = "/viewer", *, public_api_url: str = "") -> FastAPI:
    """Mount the viewer at ``path`` on ``app``; it calls the API at ``api_url`` over HTTP.

    ``public_api_url`` is the API as the browser sees it (tiles, tus): empty means same origin,
    which is the case when ``app`` is the API itself.
    """
    mount_assets(app)
    blocks = create_ui(api_url, public_api_url=public_api_url)
    mounted = gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        css_paths=[STATIC_DIR / "hoichan.css"],
        footer_links=[],
        show_error=True,
    )
    slow_down_queue_polling(blocks)  # after mounting: nothing replaces the queue from here on
    return mounted


QUEUE_POLL_S = 0.025
PROGRESS_POLL_S = 0.1


def slow_down_queue_polling(blocks: gr.Blocks) -> None:
    """Let Gradio's event queue look for work every 25 ms instead of every millisecond.

    Why: mounted in the API's process, the queue's idle loop (``sleep_when_free`` = 1 ms, progress
    every 10 ms) woke the event loop ~1,000 times a second, and every wake takes the GIL from the
    threads receiving DICOM (C-STORE) and staging STOW-RS parts. A viewer click waits at most 25 ms
    more to be picked up, which nobody sees; the attributes are Gradio's own (pinned in
    constraints.txt), left alone if a release renames them.
    """
    queue = getattr(blocks, "_queue", None)
    for name, floor in (
        ("sleep_when_free", QUEUE_POLL_S),
        ("progress_update_sleep_when_free", PROGRESS_POLL_S),
    ):
        if hasattr(queue, name):
            setattr(queue, name, max(getattr(queue, name), floor))


def standalone_app(api_url: str) -> FastAPI:
    """An app with only the viewer, at ``/``, for a remote API (which must allow this origin by CORS)."""
    app = FastAPI(title="Hoichan viewer", docs_url=None, redoc_url=None, openapi_url=None)
    return mount_viewer(app, api_url, path="/", public_api_url=api_url)
