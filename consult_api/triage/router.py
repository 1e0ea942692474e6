"""Triage runs of a case, and re-triage on demand after a model version is promoted."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, status

from consult_api.audit import service as audit
from consult_api.deps import CurrentPrincipal, SessionDep, SettingsDep
from consult_api.triage import service
from consult_api.triage.schemas import ModelVersionRead, RetriageAccepted, TriageRunRead
from consult_api.worker import HoichanCelery, create_celery
from models.registry import ModelRegistry

router = APIRouter(tags=["triage"])


def task_queue(request: Request) -> HoichanCelery:
    """The app's Celery client, made on first use (connections are opened lazily by kombu)."""
    state = request.app.state
    if getattr(state, "celery", None) is None:
        state.celery = create_celery(state.settings)
    celery: HoichanCelery = state.celery
    return celery


@router.get("/cases/{case_id}/triage", summary="AI triage runs of a case (state, model version, error)")
def list_runs(case_id: str, principal: CurrentPrincipal, session: SessionDep) -> list[TriageRunRead]:
    return [TriageRunRead.model_validate(r) for r in service.runs_for_case(session, principal, case_id)]


@router.get("/models", summary="Registered model versions: card, state and metrics (ML engineers, admins)")
def list_models(
    principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep
) -> list[ModelVersionRead]:
    return service.model_versions(session, principal, ModelRegistry(settings.model_registry_dir))


@router.post(
    "/models/{name}/versions/{version}/retriage",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-run a promoted model version on open cases (ML engineers, administrators)",
)
def retriage(
    name: str,
    version: str,
    request: Request,
    background: BackgroundTasks,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> RetriageAccepted:
    card = service.check_retriage(principal, ModelRegistry(settings.model_registry_dir), name, version)
    audit.record(session, principal, "triage.retriage", "model", card.key)
    # Background tasks run after the response, i.e. after the request's transaction committed.
    background.add_task(task_queue(request).send, "triage.retriage_model", card.name, card.version)
    return RetriageAccepted(model=card.key, queued=True)
