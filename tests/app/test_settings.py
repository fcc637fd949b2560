"""Web settings refused in production when they would expose the service."""

import pytest

from app.settings import DEVELOPMENT_API_KEY, UnsafeSettingsError, WebSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WebSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def settings(**values: object) -> WebSettings:
    return WebSettings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("api_keys", ["", "   "])
def test_check_safe_refuses_production_when_api_keys_is_empty(api_keys: str) -> None:
    production = settings(environment="production", api_keys=api_keys)

    with pytest.raises(UnsafeSettingsError, match=r"^API_KEYS is empty"):
        production.check_safe()


@pytest.mark.parametrize(
    "api_keys",
    [
        f"{DEVELOPMENT_API_KEY}:alice",
        f"prod-7f3a9c:alice,{DEVELOPMENT_API_KEY}:bob",
        f"prod-7f3a9c:alice, {DEVELOPMENT_API_KEY} :bob",
    ],
)
def test_check_safe_refuses_production_when_development_key_is_present(api_keys: str) -> None:
    production = settings(environment="production", api_keys=api_keys)

    with pytest.raises(
        UnsafeSettingsError, match="API_KEYS contains the development key 'dev-key'"
    ):
        production.check_safe()


REAL_SECRET = "s" * 32


def test_check_safe_accepts_production_when_keys_and_secret_are_real() -> None:
    production = settings(
        environment="production",
        api_keys="prod-7f3a9c:alice,prod-2b4d6e:bob",
        token_secret=REAL_SECRET,
        database_url="postgresql://app@db.internal/agents",
    )

    production.check_safe()  # raises UnsafeSettingsError when it refuses


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///./var/agent-service.db", "sqlite:///relative.db", "sqlite://"]
)
def test_check_safe_refuses_production_on_a_relative_sqlite_file(url: str) -> None:
    production = settings(
        environment="production",
        api_keys="prod-7f3a9c:alice",
        token_secret=REAL_SECRET,
        database_url=url,
    )

    with pytest.raises(UnsafeSettingsError, match=r"^DATABASE_URL is a SQLite file relative"):
        production.check_safe()


def test_check_safe_accepts_production_on_an_absolute_sqlite_file() -> None:
    production = settings(
        environment="production",
        api_keys="prod-7f3a9c:alice",
        token_secret=REAL_SECRET,
        database_url="sqlite+aiosqlite:////srv/agent-service/db.sqlite",
    )

    production.check_safe()  # raises UnsafeSettingsError when it refuses


@pytest.mark.parametrize("secret", [None, "", "short"])
def test_check_safe_refuses_production_without_a_long_token_secret(secret: str | None) -> None:
    production = settings(
        environment="production", api_keys="prod-7f3a9c:alice", token_secret=secret
    )

    with pytest.raises(UnsafeSettingsError, match="TOKEN_SECRET"):
        production.check_safe()


@pytest.mark.parametrize("environment", ["development", "test"])
def test_check_safe_accepts_when_not_production_without_keys(environment: str) -> None:
    settings(environment=environment, api_keys="").check_safe()  # raises when it refuses


def test_check_safe_accepts_development_key_when_environment_is_development() -> None:
    development = settings(environment="development", api_keys=f"{DEVELOPMENT_API_KEY}:dev")

    development.check_safe()  # raises UnsafeSettingsError when it refuses


def test_check_safe_reads_api_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEYS", f"{DEVELOPMENT_API_KEY}:alice")

    with pytest.raises(UnsafeSettingsError, match="development key"):
        settings().check_safe()


@pytest.mark.parametrize("api_keys", [",", " , ,"])
def test_check_safe_refuses_production_when_api_keys_has_no_pairs(api_keys: str) -> None:
    production = settings(environment="production", api_keys=api_keys)

    with pytest.raises(UnsafeSettingsError, match="API_KEYS"):
        production.check_safe()


def test_max_body_bytes_allows_every_field_at_its_limit_when_defaults() -> None:
    assert settings().max_body_bytes == 6 * 32 * 1024 + 2 * 8 * 1024 + 4096
