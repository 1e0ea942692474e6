"""Everything the benchmark needs before the clock starts: a 20k x 20k synthetic slide, a migrated
database with a referral network, a submitted pathology case, and the slide ingested into it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from consult_api import migrate
from consult_api.access import Role
from consult_api.auth.security import hash_password
from consult_api.auth.service import principal_for
from consult_api.cases import service as cases
from consult_api.cases.models import CaseKind, CaseStatus
from consult_api.cases.schemas import CaseCreate, PatientIn
from consult_api.db import create_db_engine, create_session_factory, transaction
from consult_api.facilities.models import Facility, Tier
from consult_api.slides import service as slides
from consult_api.storage.blobs import LocalBlobStore
from consult_api.users.models import User

PASSWORD = "benchmark-password-123"  # noqa: S105 - a throwaway benchmark account
READER = "bench_path"


@dataclass(frozen=True)
class Prepared:
    database_url: str
    data_dir: Path
    slide_id: str
    slide_path: Path


def synthetic_slide(workdir: Path, side: int) -> Path:
    """Generate once (about 2 minutes for 20k x 20k on two cores) and reuse."""
    path = workdir / f"slide-{side}.tiff"
    if not path.exists():
        from datasets.synthetic.slides import generate_slide

        generate_slide(np.random.default_rng(side), workdir, name=f"slide-{side}", width=side, height=side)
    return path


def _network(session: object) -> tuple[User, User]:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    central = Facility(code="C1", name="Central", tier=Tier.central)
    district = Facility(code="D1", name="District", tier=Tier.district)
    session.add_all([central, district])
    session.flush()
    district.refers_to = [central]
    password = hash_password(PASSWORD)
    referrer = User(
        username="bench_ref",
        full_name="Ref",
        password_hash=password,
        facility_id=district.id,
        roles=[Role.referrer.value],
    )
    reader = User(
        username=READER,
        full_name="Path",
        password_hash=password,
        facility_id=central.id,
        roles=[Role.pathologist.value],
    )
    session.add_all([referrer, reader])
    session.flush()
    return referrer, reader


def prepare(workdir: Path, slide_path: Path) -> Prepared:
    """A fresh database and data folder under ``workdir/run`` with the slide on a submitted case."""
    run = workdir / "run"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    data_dir = run / "var"
    data_dir.mkdir(parents=True)
    url = f"sqlite:///{(run / 'hoichan.db').resolve()}"
    migrate.upgrade(url)
    factory = create_session_factory(create_db_engine(url))
    with transaction(factory) as session:
        referrer, _ = _network(session)
        who = principal_for(referrer)
        central_id = session.query(Facility).filter_by(code="C1").one().id
        patient = PatientIn(identifier="BENCH-1", name="Bench Patient")
        case = cases.create_case(
            session,
            who,
            CaseCreate(
                kind=CaseKind.pathology, target_facility_id=central_id, patient=patient, clinical_question="?"
            ),
        )
        cases.transition(session, who, case, CaseStatus.submitted)
        slide = slides.ingest(
            session,
            who,
            LocalBlobStore(data_dir / "blobs"),
            slides.SlideFiles(data_dir / "slides"),
            case_id=case.id,
            path=slide_path,
            filename=slide_path.name,
        )
        slide_id = slide.id
    return Prepared(url, data_dir, slide_id, slide_path)
