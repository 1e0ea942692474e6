from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consult_api.config import Mode, Settings


def test_production_refuses_missing_or_weak_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="HOICHAN_SECRET_KEY"):
        Settings(mode=Mode.production, data_dir=tmp_path)
    with pytest.raises(ValidationError, match="HOICHAN_SECRET_KEY"):
        Settings(mode=Mode.production, data_dir=tmp_path, secret_key="changeme")
    ok = Settings(mode=Mode.production, data_dir=tmp_path, secret_key="k" * 40)
    assert ok.signing_key == "k" * 40


def test_development_generates_a_secret_once_and_keeps_it(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).signing_key
    second = Settings(data_dir=tmp_path).signing_key
    assert first == second
    assert len(first) >= 48
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOICHAN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOICHAN_ACCESS_TOKEN_MINUTES", "5")
    settings = Settings()
    assert settings.access_token_minutes == 5
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'hoichan.db').resolve()}"
