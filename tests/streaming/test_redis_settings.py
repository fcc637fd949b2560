"""``normalise_redis_url``: TLS URLs usable by both redis-py and Celery; the rest untouched."""

import os

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
        _env_file=None,
        redis_url="rediss://cache.example.com:6380/0",
        celery_broker_url=None,
        celery_result_backend="redis://results.internal:6379/1",
    )

    assert settings.broker_url == "rediss://cache.example.com:6380/0?ssl_cert_reqs=required"
    assert settings.result_backend_url == "redis://results.internal:6379/1"


def test_cert_reqs_setting_wins_over_the_url_when_rediss() -> None:
    url = "rediss://cache.example.com:6380/0?ssl_cert_reqs=required"

    assert normalise_redis_url(url, cert_reqs="none") == (
        "rediss://cache.example.com:6380/0?ssl_cert_reqs=none"
    )


def test_ca_bundle_setting_is_added_to_the_url_when_rediss() -> None:
    normalised = normalise_redis_url(
        "rediss://cache.example.com:6380/0", ca_certs="/etc/ssl/platform ca.pem"
    )

    assert normalised == (
        "rediss://cache.example.com:6380/0"
        "?ssl_cert_reqs=required&ssl_ca_certs=%2Fetc%2Fssl%2Fplatform%20ca.pem"
    )


def test_tls_settings_leave_a_plain_url_alone() -> None:
    url = "redis://cache.internal:6379/0"

    assert normalise_redis_url(url, cert_reqs="none", ca_certs="/ca.pem") == url


def test_tls_settings_apply_to_every_url_of_the_settings() -> None:
    settings = RedisSettings(
        _env_file=None,
        redis_url="rediss://cache.example.com:6380/0",
        celery_broker_url="rediss://broker.example.com:6380/0?ssl_cert_reqs=required",
        celery_result_backend="rediss://results.example.com:6380/1",
        redis_ssl_cert_reqs="none",
    )

    for url in (settings.redis_url_normalised, settings.broker_url, settings.result_backend_url):
        assert url.endswith("?ssl_cert_reqs=none")


def test_unknown_cert_reqs_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="redis_ssl_cert_reqs"):
        RedisSettings(
            _env_file=None,
            redis_ssl_cert_reqs="sometimes",
        )


def test_empty_cert_reqs_setting_means_the_url_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "")
    monkeypatch.setenv("REDIS_URL", "rediss://cache.example.com:6380/0?ssl_cert_reqs=optional")

    settings = RedisSettings(_env_file=None)

    assert settings.redis_url_normalised.endswith("?ssl_cert_reqs=optional")


def test_celery_variables_are_rewritten_to_the_resolved_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery reads them before its configuration: a raw rediss:// URL there would skip the
    certificate policy."""
    monkeypatch.setenv("CELERY_BROKER_URL", "rediss://broker.example.com:6380/0")
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    settings = RedisSettings(_env_file=None, redis_ssl_cert_reqs="none")

    settings.align_celery_environment()

    assert os.environ["CELERY_BROKER_URL"] == (
        "rediss://broker.example.com:6380/0?ssl_cert_reqs=none"
    )
    assert "CELERY_RESULT_BACKEND" not in os.environ
