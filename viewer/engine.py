"""The viewer's non-UI logic, one object per viewer process (LLaMA-Factory's ``Engine``).

It holds what every user shares: the HTTP connection pool to the API, which optional APIs the
server has, and the registry of named components for switching language. Everything about one
user arrives as arguments (their ``UserSession`` and ``SliceView`` from ``gr.State``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from PIL import Image

from viewer import client, render
from viewer.client import ApiClient, ApiError
from viewer.i18n import component_args, text
from viewer.state import SeriesRef, SliceView, UserSession

CAPABILITY_TTL_S = 30.0


@dataclass(frozen=True)
class Capabilities:
    """Optional APIs found in the server's OpenAPI document (some are still being built)."""

    findings: bool = False
    heatmaps: bool = False
    review: bool = False
    slides: bool = False
    sessions: bool = False
    models: bool = False
    agreement: bool = False
    opinion_pdf: bool = False
    case_studies: bool = False

    @classmethod
    def from_routes(cls, paths: frozenset[str]) -> Capabilities:
        def has(suffix: str) -> bool:
            return any(p.endswith(suffix) for p in paths)

        return cls(
            findings=has("/cases/{case_id}/findings"),
            heatmaps=has("/findings/{finding_id}/heatmap"),
            review=has("/findings/{finding_id}/accept"),
            slides=has("/cases/{case_id}/slides"),
            sessions=has("/cases/{case_id}/sessions"),
            models="/api/v1/models" in paths,
            agreement="/api/v1/models/agreement" in paths,
            opinion_pdf=has("/opinions/{opinion_id}/pdf"),
            case_studies=has("/cases/{case_id}/studies"),
        )


class Manager:
    """Named components, so one handler can relabel them all when the language changes."""

    def __init__(self) -> None:
        self.elements: dict[str, Any] = {}

    def add(self, name: str, component: Any) -> Any:
        self.elements[name] = component
        return component

    def names(self) -> list[str]:
        return list(self.elements)

    def components(self) -> list[Any]:
        return list(self.elements.values())


class Engine:
    def __init__(self, api_url: str, public_api_url: str = "", assets_url: str = "/viewer-assets") -> None:
        self.api_url = api_url.rstrip("/")
        self.public_api_url = public_api_url.rstrip("/")
        self.assets_url = assets_url.rstrip("/")
        self.http = httpx.Client(base_url=self.api_url, timeout=60.0)
        self.manager = Manager()
        self._caps: tuple[float, Capabilities] | None = None
        self._lock = threading.Lock()

    # shared, per process
    def capabilities(self) -> Capabilities:
        with self._lock:
            if self._caps and time.monotonic() - self._caps[0] < CAPABILITY_TTL_S:
                return self._caps[1]
        try:
            caps = Capabilities.from_routes(client.routes(self.http))
        except (ApiError, httpx.HTTPError):
            caps = Capabilities()
        with self._lock:
            self._caps = (time.monotonic(), caps)
        return caps

    def head(self) -> str:
        """Scripts every page needs; Gradio loads them once and before any ``js_on_load``."""
        vendor = f"{self.assets_url}/vendor"
        return (
            f'<script src="{vendor}/openseadragon/openseadragon.min.js"></script>'
            f'<script src="{vendor}/tus/tus.min.js"></script>'
            f'<script src="{self.assets_url}/hoichan.js"></script>'
        )

    def relabel(self, lang: str) -> list[Any]:
        """One update per registered component, in ``manager.names()`` order."""
        import gradio as gr

        return [gr.update(**component_args(name, lang)) for name in self.manager.names()]

    # per user
    def api(self, session: UserSession) -> ApiClient:
        return ApiClient(self.http, session.token)

    def sign_in(self, username: str, password: str, lang: str) -> UserSession:
        token = client.sign_in(self.http, username, password)
        user = ApiClient(self.http, token).me()
        return UserSession(token=token, user=user, lang=lang)

    def browser_config(self, session: UserSession | None, **extra: Any) -> str:
        """What page scripts need to call the API themselves (tiles, tus): base URL and token."""
        config = {
            "api": self.public_api_url,
            "token": session.token if session else "",
            **extra,
        }
        return json.dumps(config)

    def worklist(self, session: UserSession, filters: dict[str, Any]) -> str:
        api = self.api(session)
        page = api.cases(limit=100, **filters)
        names = {f["id"]: f["name"] for f in api.facilities()}
        findings: dict[str, list[dict[str, Any]]] = {}
        if self.capabilities().findings:
            for item in page["items"]:
                findings[item["id"]] = _quiet(lambda i=item: api.findings(i["id"]), [])
        return render.worklist_html(page["items"], names, findings, datetime.now(UTC), session.lang)

    def case_header(self, session: UserSession, case: dict[str, Any]) -> str:
        patient = case.get("patient", {})
        lines = [
            f"### {case['kind']} · {case['status']} · {case['priority']}",
            f"**{patient.get('name', '')}** ({patient.get('identifier', '')}, "
            f"{patient.get('sex', '')}, {patient.get('birth_date') or '—'})",
            "",
            f"> {case['clinical_question']}",
        ]
        if case.get("clinical_notes"):
            lines += ["", case["clinical_notes"]]
        return "\n".join(lines)

    def load_series(self, session: UserSession, case: dict[str, Any]) -> list[SeriesRef]:
        """The case's series, each with its instances in InstanceNumber order.

        The studies come from ``/cases/{id}/studies`` (the studies linked to this case); never from a
        patient id search, which two facilities' identical identifiers would mix up. A server without
        that route shows no images rather than possibly another patient's."""
        if not self.capabilities().case_studies:
            return []
        api = self.api(session)
        result = []
        for study in api.case_studies(str(case["id"])):
            study_uid = str(study["study_instance_uid"])
            for series in study.get("series", []):
                series_uid = str(series["series_instance_uid"])
                number = series.get("series_number")
                parts = (series.get("modality"), series.get("series_description"), f"#{number or '?'}")
                label = " ".join(str(v) for v in parts if v)
                instances = sorted(
                    api.instances(study_uid, series_uid),
                    key=lambda i: int(render.dicom_value(i, "00200013", "0") or 0),
                )
                uids = [render.dicom_value(i, "00080018") for i in instances]
                result.append(SeriesRef(study_uid, series_uid, f"{label} ({len(uids)})", uids))
        return result

    def render_slice(self, session: UserSession, view: SliceView) -> tuple[Image.Image | None, str]:
        series = view.current
        if series is None or not series.instances:
            return None, text(session.lang, "no_images")
        index = min(max(view.slice_index, 0), len(series.instances) - 1)
        sop_uid = series.instances[index]
        jpeg = self.api(session).rendered(series.study_uid, series.series_uid, sop_uid, view.window)
        marks = render.marks_for_slice(view.findings, sop_uid, index)
        image = render.compose_slice(jpeg, view.zoom, view.centre, marks, view.overlay)
        overlay = (
            text(session.lang, "overlay_on", k=len(marks))
            if view.overlay
            else text(session.lang, "overlay_off")
        )
        info = text(
            session.lang,
            "slice_info",
            n=index + 1,
            total=len(series.instances),
            w=view.window[1],
            c=view.window[0],
            z=view.zoom,
            overlay=overlay,
        )
        return image, f"{info}  \n`{sop_uid}`"

    def heatmap_url(self, session: UserSession, case_id: str, finding: dict[str, Any]) -> str | None:
        """The finding's heatmap PNG as a data URL (the browser overlay needs no token), or None."""
        if not finding.get("heatmap_sha256") or not self.capabilities().heatmaps:
            return None
        try:
            png = self.api(session).finding_heatmap(case_id, str(finding["id"]))
        except ApiError:
            return None
        return "data:image/png;base64," + base64.b64encode(png).decode()

    def findings(self, session: UserSession, case_id: str) -> list[dict[str, Any]] | None:
        """The case's findings, or None when the server has no findings API."""
        if not self.capabilities().findings:
            return None
        return self.api(session).findings(case_id)


def _quiet(call: Any, default: Any) -> Any:
    """A best-effort extra (e.g. AI column of the worklist): an error leaves the default."""
    try:
        return call()
    except (ApiError, httpx.HTTPError):
        return default
