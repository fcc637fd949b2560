"""``normalise_redis_url``: TLS URLs usable by both redis-py and Celery; the rest untouched."""

import pytest

from streaming.redis_settings import RedisSettings, normalise_redis_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://cache.internal/0",
        "redis://:p%40ss@cache.internal:6380/3",
        "redis://cache.internal:6379/0?socket_timeout=5",
        "unix:///var/run/redis.sock?db=1",
    ],
)
def test_normalise_keeps_url_unchanged_when_not_rediss(url: str) -> None:
    assert normalise_redis_url(url) == url


def test_normalise_requires_certificates_when_rediss_has_no_ssl_cert_reqs() -> None:
    url = "rediss://default:secret@cache.example.com:6380/0"

    assert normalise_redis_url(url) == f"{url}?ssl_cert_reqs=required"


def test_normalise_appends_ssl_cert_reqs_after_existing_query_when_rediss() -> None:
    url = "rediss://cache.example.com:6380/0?socket_timeout=5"

    assert normalise_redis_url(url) == f"{url}&ssl_cert_reqs=required"


@pytest.mark.parametrize(
    "url",
    [
        "rediss://cache.example.com:6380/0?ssl_cert_reqs=none",
        "rediss://cache.example.com:6380/0?ssl_cert_reqs=optional&socket_timeout=5",
        "rediss://cache.example.com:6380/0?socket_timeout=5&ssl_cert_reqs=CERT_NONE",
    ],
)
def test_normalise_keeps_explicit_ssl_cert_reqs_when_rediss(url: str) -> None:
    assert normalise_redis_url(url) == url


def test_normalise_is_idempotent_when_applied_twice() -> None:
    once = normalise_redis_url("rediss://cache.example.com:6380/0")

    assert normalise_redis_url(once) == once


def test_redis_settings_normalise_both_urls_when_given_explicitly() -> None:
    settings = RedisSettings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url="rediss://cache.example.com:6380/0",
        celery_broker_url=None,
        celery_result_backend="redis://results.internal:6379/1",
    )

    assert settings.broker_url == "rediss://cache.example.com:6380/0?ssl_cert_reqs=required"
    assert settings.result_backend_url == "redis://results.internal:6379/1"
