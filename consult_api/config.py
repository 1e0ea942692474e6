"""Settings for one deployable, read from ``HOICHAN_*`` environment variables and ``.env``.

Embedded defaults run a whole site from one folder; production mode refuses the shortcuts that
are only safe on a laptop (a generated secret kept on local disk, SQLite behind several replicas).
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consult_api.auth.security import LoginThrottle, PasswordPolicy

SECRET_FILE_NAME = "secret_key"  # noqa: S105 - a file name
_WEAK_SECRETS = {"", "secret", "changeme", "change-me", "development", "dev", "hoichan"}
MIN_SECRET_LENGTH = 32


class Mode(StrEnum):
    development = "development"
    production = "production"


class VideoProvider(StrEnum):
    """Who carries a review session's media: browsers directly (mesh) or an SFU."""

    builtin = "builtin"
    janus = "janus"
    livekit = "livekit"


class Settings(BaseSettings):
    """Every knob of the consult service; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="HOICHAN_", env_file=".env", extra="ignore")

    mode: Mode = Mode.development
    data_dir: Path = Path("var")
    database_url: str | None = None
    secret_key: SecretStr | None = None
    access_token_minutes: int = Field(default=30, ge=1, le=24 * 60)
    jwt_algorithm: str = "HS256"
    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: SecretStr | None = None
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8)
    password_hash_parallelism: int = Field(default=4, ge=1)
    login_max_failures: int = Field(
        default=5, ge=1, description="failed logins per username within the window before 429"
    )
    login_max_failures_per_ip: int = Field(
        default=50, ge=1, description="failed logins per client address within the window before 429"
    )
    login_window_seconds: float = Field(default=900.0, gt=0, description="login throttling window")
    log_level: str = "INFO"
    log_json: bool = True
    cors_origins: list[str] = Field(default_factory=list)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    max_stow_bytes: int = Field(default=4 * 1024**3, ge=1024, description="largest STOW-RS request")
    max_stow_parts: int = Field(default=10_000, ge=1)
    max_zip_entries: int = Field(default=20_000, ge=1)
    max_zip_total_bytes: int = Field(default=8 * 1024**3, ge=1024)
    max_zip_ratio: int = Field(
        default=200, ge=2, description="largest uncompressed/compressed ratio per entry"
    )
    study_stable_seconds: float = Field(
        default=60.0, gt=0, description="quiet time before a study is complete"
    )
    dimse_enabled: bool = True
    dimse_host: str = "127.0.0.1"
    dimse_port: int = Field(default=11112, ge=0, le=65535)
    dimse_ae_title: str = Field(default="HOICHAN", min_length=1, max_length=16)
    dimse_spool_ring_mb: int = Field(
        default=256,
        ge=4,
        description="preallocated ring (under the blob store) that C-STORE instances are made durable "
        "in before the answer; a quarter of it is the largest instance that goes there",
    )
    dimse_index_linger_seconds: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description="how long the C-STORE indexer waits to gather a group commit (an association's "
        "release ends the wait)",
    )
    freeze_heap: bool = Field(
        default=True,
        description="freeze the objects alive after start-up out of the cyclic garbage collector's "
        "sight (gc.freeze): full collections then skip them. Off for processes that build and drop "
        "many apps, such as a test run",
    )
    warm_start: bool = Field(
        default=True,
        description="at start, build FastAPI's route table (else the first request after a start pays "
        "0.2-0.5 s) and let threads hand work over within 0.5 ms (GIL switch interval). Off for "
        "processes that build and drop many apps, such as a test run",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker (redis://, amqp://); unset: the embedded filesystem broker"
    )
    result_backend: str | None = Field(default=None, description="Celery result backend; unset: no results")
    models_dir: Path | None = Field(default=None, description="model registry root (default data_dir/models)")
    worker_concurrency: int = Field(default=1, ge=1, description="processes per embedded worker")
    triage_poll_seconds: float = Field(default=10.0, gt=0, description="beat period of study-complete checks")
    triage_requeue_seconds: float = Field(
        default=300.0, gt=0, description="re-send triage runs still pending (or leased) after this long"
    )
    alert_check_seconds: float = Field(default=60.0, gt=0, description="beat period of deadline checks")
    alert_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str = "hoichan@localhost"
    video_provider: VideoProvider = VideoProvider.builtin
    session_join_token_minutes: int = Field(default=10, ge=1, le=24 * 60)
    builtin_max_peers: int = Field(default=6, ge=2, le=16, description="mesh sessions: most peers online")
    stun_urls: list[str] = Field(default_factory=list, description="stun: URLs handed to browsers")
    turn_urls: list[str] = Field(default_factory=list, description="turn:/turns: URLs (coturn)")
    turn_username: str | None = Field(default=None, description="static TURN user (unset: shared secret)")
    turn_password: SecretStr | None = None
    turn_shared_secret: SecretStr | None = Field(
        default=None, description="coturn static-auth-secret: per-user credentials that expire"
    )
    janus_url: str = Field(default="http://127.0.0.1:8088/janus", description="Janus HTTP API, for Hoichan")
    janus_public_url: str | None = Field(default=None, description="Janus URL for browsers (else janus_url)")
    janus_admin_key: SecretStr | None = Field(default=None, description="VideoRoom admin_key, if set")
    janus_max_publishers: int = Field(default=16, ge=1)
    livekit_url: str | None = Field(default=None, description="wss:// URL of the LiveKit server")
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _require_livekit_credentials(self) -> Settings:
        """A LiveKit provider without its URL, key and secret could issue no usable token."""
        if self.video_provider is VideoProvider.livekit and not (
            self.livekit_url and self.livekit_api_key and self.livekit_api_secret
        ):
            raise ValueError("the livekit provider needs HOICHAN_LIVEKIT_URL, _API_KEY and _API_SECRET")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        """Production must name its own secret and database; development may generate them."""
        if self.mode is Mode.production:
            secret = self.secret_key.get_secret_value() if self.secret_key else ""
            if secret.lower() in _WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"HOICHAN_SECRET_KEY must be set to a random value of at least {MIN_SECRET_LENGTH} "
                    "characters in production mode"
                )
            if (
                self.bootstrap_admin_password is not None
                and len(self.bootstrap_admin_password.get_secret_value()) < 12
            ):
                raise ValueError("HOICHAN_BOOTSTRAP_ADMIN_PASSWORD must have at least 12 characters")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or a SQLite file under the data folder (the embedded default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hoichan.db').resolve()}"

    @property
    def password_policy(self) -> PasswordPolicy:
        return PasswordPolicy(
            time_cost=self.password_hash_time_cost,
            memory_kib=self.password_hash_memory_kib,
            parallelism=self.password_hash_parallelism,
        )

    @property
    def login_throttle(self) -> LoginThrottle:
        return LoginThrottle(
            max_failures=self.login_max_failures,
            max_failures_per_ip=self.login_max_failures_per_ip,
            window_seconds=self.login_window_seconds,
        )

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def model_registry_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @cached_property
    def signing_key(self) -> str:
        """The JWT signing secret: configured, or generated once and kept beside the data (dev only)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return _load_or_create_secret(self.data_dir / SECRET_FILE_NAME)


def _load_or_create_secret(path: Path) -> str:
    """Keep a development secret stable across restarts without ever shipping a default one."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value)
    tmp.chmod(0o600)
    tmp.replace(path)
    return value
