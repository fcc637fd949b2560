"""Worker settings: limits refused at start-up, per-task time limits, and where Redis is."""

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from contract.tasks import INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING, TIME_LIMITS
from streaming.redis_settings import DEFAULT_REDIS_URL
from worker.settings import WorkerSettings

INVOKE_TIME_LIMIT = TIME_LIMITS[INVOKE_AGENT_ASYNC]
STREAMING_TIME_LIMIT = TIME_LIMITS[INVOKE_AGENT_WITH_STREAMING]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults mean defaults: no variable from the developer's shell reaches these tests."""
    for name in WorkerSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def settings(**values: object) -> WorkerSettings:
    return WorkerSettings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("soft", "hard"), [(900, 900), (901, 900), (200, 100)])
def test_settings_refuse_soft_limit_when_not_below_hard_limit(soft: int, hard: int) -> None:
    with pytest.raises(ValidationError, match="CELERY_TASK_SOFT_TIME_LIMIT must be below"):
        settings(celery_task_soft_time_limit=soft, celery_task_time_limit=hard)


def test_settings_refuse_soft_limit_from_environment_when_not_below_hard_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "300")
    monkeypatch.setenv("CELERY_TASK_SOFT_TIME_LIMIT", "300")

    with pytest.raises(ValidationError, match="CELERY_TASK_SOFT_TIME_LIMIT"):
        settings()


@pytest.mark.parametrize("visibility", [60, 899, 900])
def test_settings_refuse_visibility_timeout_when_not_above_longest_limit(visibility: int) -> None:
    with pytest.raises(ValidationError, match="CELERY_BROKER_VISIBILITY_TIMEOUT must exceed"):
        settings(celery_broker_visibility_timeout=visibility)


def test_settings_accept_visibility_timeout_when_just_above_longest_limit() -> None:
    assert settings(celery_broker_visibility_timeout=901).longest_time_limit == 900


def test_settings_compare_visibility_with_capped_limit_when_hard_limit_is_small() -> None:
    small = settings(
        celery_task_time_limit=300,
        celery_task_soft_time_limit=200,
        celery_broker_visibility_timeout=301,
    )

    assert small.longest_time_limit == 300
    with pytest.raises(ValidationError, match="CELERY_BROKER_VISIBILITY_TIMEOUT"):
        settings(
            celery_task_time_limit=300,
            celery_task_soft_time_limit=200,
            celery_broker_visibility_timeout=300,
        )


def test_time_limits_leave_30_seconds_of_grace_when_defaults() -> None:
    defaults = settings()

    assert defaults.time_limits(INVOKE_TIME_LIMIT) == (570, 600)
    assert defaults.time_limits(STREAMING_TIME_LIMIT) == (870, 900)


def test_time_limits_use_soft_setting_when_it_is_small() -> None:
    configured = settings(celery_task_soft_time_limit=45)

    assert configured.time_limits(600) == (45, 600)
    assert configured.time_limits(900) == (45, 900)


def test_time_limits_cap_hard_limit_when_setting_is_lower() -> None:
    configured = settings(celery_task_time_limit=120, celery_task_soft_time_limit=100)

    assert configured.time_limits(600) == (100, 120)
    assert configured.time_limits(900) == (100, 120)


def test_time_limits_keep_soft_below_hard_when_hard_cap_is_tiny() -> None:
    configured = settings(celery_task_time_limit=2, celery_task_soft_time_limit=1)

    assert configured.time_limits(600) == (1, 2)


def test_settings_use_redis_url_for_broker_and_backend_when_celery_names_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6380/2")

    configured = settings()

    assert configured.broker_url == "redis://cache.internal:6380/2"
    assert configured.result_backend_url == "redis://cache.internal:6380/2"


def test_settings_prefer_celery_names_when_both_spellings_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://broker.internal:6379/0")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://results.internal:6379/1")

    configured = settings()

    assert configured.broker_url == "redis://broker.internal:6379/0"
    assert configured.result_backend_url == "redis://results.internal:6379/1"


def test_settings_fall_back_per_name_when_only_broker_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://broker.internal:6379/0")

    configured = settings()

    assert configured.broker_url == "redis://broker.internal:6379/0"
    assert configured.result_backend_url == "redis://cache.internal:6380/2"


def test_settings_require_certificates_when_redis_url_is_rediss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://:secret@cache.example.com:6380/0")

    configured = settings()

    expected = "rediss://:secret@cache.example.com:6380/0?ssl_cert_reqs=required"
    assert configured.broker_url == expected
    assert configured.result_backend_url == expected


def test_settings_use_localhost_redis_when_nothing_is_set() -> None:
    configured = settings()

    assert configured.broker_url == configured.result_backend_url == DEFAULT_REDIS_URL
    default = urlsplit(DEFAULT_REDIS_URL)
    assert (default.scheme, default.hostname, default.port, default.path) == (
        "redis",
        "localhost",
        6379,
        "/0",
    )


PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://app@db.internal/agents",
    "audit_archive_url": "s3://audit/agent-service",
}


def test_production_settings_accept_a_server_database_and_a_bucket() -> None:
    assert settings(**PRODUCTION).environment == "production"
    assert settings(**{**PRODUCTION, "audit_archive_url": "/srv/audit"}).audit_archive_url


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "sqlite+aiosqlite:///./var/agent-service.db", "DATABASE_URL is a SQLite"),
        ("audit_archive_url", "./var/audit-archive", "AUDIT_ARCHIVE_URL is a directory relative"),
    ],
)
def test_production_settings_refuse_what_a_restart_would_lose(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**{**PRODUCTION, field: value})


def test_temp_dir_is_kept_as_given_not_resolved(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)

    assert settings(temp_dir=str(link)).temp_dir == link
    with pytest.raises(ValidationError, match="filesystem root"):
        settings(temp_dir="/tmp/..")
