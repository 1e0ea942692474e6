"""``hoichan viewer --api URL``: the viewer on its own, against a remote API."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_viewer(args: argparse.Namespace) -> int:
    import uvicorn

    from viewer.mount import standalone_app

    print(f"Hoichan viewer on http://{args.host}:{args.port}/ for the API at {args.api}")
    uvicorn.run(standalone_app(args.api), host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def add_viewer_commands(subparsers: Any) -> None:
    """Register ``viewer`` on ``hoichan``'s sub-command parser (called from ``consult_api.cli``)."""
    viewer = subparsers.add_parser("viewer", help="run the Gradio viewer alone against a remote API")
    viewer.add_argument(
        "--api", required=True, help="base URL of the consult API, e.g. https://hoichan.example"
    )
    viewer.add_argument("--host", default="127.0.0.1")
    viewer.add_argument("--port", type=int, default=7860)
    viewer.set_defaults(handler=cmd_viewer)
