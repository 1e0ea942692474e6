"""``hoichan demo-slide``: a realistic synthetic slide so a fresh install has something to show.

The pixels come from ``datasets.synthetic.slides`` (tissue pieces, H&E stain model, tumour regions,
Aperio-described JPEG pyramid, a label carrying a fake patient name). With ``--case-id`` the slide
goes through the same ingest as an upload, acting as the bootstrap administrator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_SIZE = (8192, 6144)


def add_demo_slide_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo-slide", help="generate a synthetic whole-slide image (and attach it)"
    )
    parser.add_argument("--width", type=int, default=DEFAULT_SIZE[0], help="level-0 width in pixels")
    parser.add_argument("--height", type=int, default=DEFAULT_SIZE[1], help="level-0 height in pixels")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="folder to write into (default: <data dir>/demo)")
    parser.add_argument("--case-id", help="attach the slide to this case, as the bootstrap administrator")
    parser.set_defaults(handler=cmd_demo_slide)


def generate(out: Path, width: int, height: int, seed: int) -> Path:
    import numpy as np

    from datasets.synthetic.slides import generate_slide

    made = generate_slide(np.random.default_rng(seed), out, name="demo-slide", width=width, height=height)
    return made.slide.path


def _attach(path: Path, case_id: str) -> str:
    """Ingest ``path`` into ``case_id`` with the administrator's rights; returns the slide id."""
    from consult_api import migrate
    from consult_api.auth.service import principal_for
    from consult_api.config import Settings
    from consult_api.db import create_db_engine, create_session_factory, transaction
    from consult_api.slides import service
    from consult_api.storage.blobs import LocalBlobStore
    from consult_api.users import repository as users

    settings = Settings()
    migrate.upgrade(settings.resolved_database_url)
    factory = create_session_factory(create_db_engine(settings.resolved_database_url))
    files = service.SlideFiles(settings.data_dir / "slides")
    with transaction(factory) as session:
        admin = users.by_username(session, settings.bootstrap_admin_username)
        if admin is None:
            raise SystemExit(f"no user {settings.bootstrap_admin_username!r}: run `hoichan serve` once first")
        slide = service.ingest(
            session,
            principal_for(admin),
            LocalBlobStore(settings.blob_dir),
            files,
            case_id=case_id,
            path=path,
            filename=path.name,
        )
        return slide.id


def cmd_demo_slide(args: argparse.Namespace) -> int:
    from consult_api.config import Settings
    from consult_api.errors import HoichanError

    out: Path = args.out or Settings().data_dir / "demo"
    path = generate(out, args.width, args.height, args.seed)
    result: dict[str, str] = {"path": str(path)}
    if args.case_id:
        try:
            result["slide_id"] = _attach(path, args.case_id)
        except HoichanError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0
