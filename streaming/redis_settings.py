"""Where Redis is, for every process: the broker, the result backend and the stream transport.

A PaaS hands out one ``REDIS_URL`` (often ``rediss://`` with a self-signed certificate); Celery
deployments name ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``. Both spellings are honoured,
the Celery names winning when both are set.

A platform's ``rediss://`` URL cannot be edited (the platform rotates it), so how its certificate
is checked is a setting of its own, ``REDIS_SSL_CERT_REQS`` (with ``REDIS_SSL_CA_CERTS``, the CA
bundle to check it against), written into every URL the processes use: redis-py, kombu (the
broker) and Celery's result backend all read ``ssl_cert_reqs`` and ``ssl_ca_certs`` from the URL's
query, so every Redis client of every process (broker, backend, streams, leases, beat, web)
applies the same policy. The web and worker settings extend this class so the
two sides can never resolve the same environment to different servers.
"""

import os
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
QUEUE_ALLOWANCE_SECONDS = 86_400


CertReqs = Literal["required", "optional", "none"]


def normalise_redis_url(
    url: str, *, cert_reqs: CertReqs | None = None, ca_certs: str | None = None
) -> str:
    """Make a ``rediss://`` URL usable by redis-py, kombu and Celery alike, with the
    certificate policy of the settings.

    Celery refuses a ``rediss://`` URL without ``ssl_cert_reqs``; redis-py and kombu accept the
    same query parameter. ``cert_reqs`` (the setting) wins over the URL's own; without either,
    certificates are checked (``required``). ``ca_certs`` names the CA bundle to check against.
    A ``redis://`` URL is returned as it is.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = dict(parse_qsl(parts.query))
    if cert_reqs is not None:
        query["ssl_cert_reqs"] = cert_reqs
    query.setdefault("ssl_cert_reqs", "required")
    if ca_certs:
        query["ssl_ca_certs"] = ca_certs
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class RedisSettings(BaseSettings):
    """Connection settings shared by the web, worker and beat processes."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    redis_url: str = Field(default=DEFAULT_REDIS_URL, description="A PaaS's Redis URL.")
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None
    celery_result_expires: int = Field(
        default=86_400,
        ge=60,
        description="Seconds a finished task's result is kept (owner record and log: a day more).",
    )

    redis_ssl_cert_reqs: CertReqs | None = Field(
        default=None,
        description="How a rediss:// server's certificate is checked, for every Redis client: "
        "required (the default), optional (the same for a client), none (not checked: anyone "
        "between the processes and Redis can read and change everything). Wins over the URL's "
        "own ssl_cert_reqs.",
    )
    redis_ssl_ca_certs: str | None = Field(
        default=None,
        description="A CA bundle (PEM file) to check a rediss:// server's certificate against, "
        "e.g. a platform's self-signed CA: safer than REDIS_SSL_CERT_REQS=none.",
    )

    @field_validator("redis_ssl_cert_reqs", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    event_log_maxlen: int = Field(
        default=10_000,
        ge=100,
        description="Entries a task's event log keeps; a client behind that gets a reset.",
    )

    @property
    def task_data_ttl(self) -> int:
        """Seconds a task's owner record and event log live: its result's lifetime, plus a day
        for the time it may spend queued and retrying."""
        return self.celery_result_expires + QUEUE_ALLOWANCE_SECONDS

    def _normalised(self, url: str) -> str:
        return normalise_redis_url(
            url, cert_reqs=self.redis_ssl_cert_reqs, ca_certs=self.redis_ssl_ca_certs or None
        )

    @property
    def redis_url_normalised(self) -> str:
        return self._normalised(self.redis_url)

    @property
    def broker_url(self) -> str:
        return self._normalised(self.celery_broker_url or self.redis_url)

    @property
    def result_backend_url(self) -> str:
        return self._normalised(self.celery_result_backend or self.redis_url)

    def align_celery_environment(self) -> None:
        """Make ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``, where they are set, say what
        these settings resolved them to (the certificate policy included).

        Celery reads those two variables before its own configuration, so a ``rediss://`` URL
        given there would reach kombu and the result backend as it was written: the backend
        refuses it without ``ssl_cert_reqs``, and kombu connects without checking the
        certificate. Call it before a Celery app connects."""
        for name, value in (
            ("CELERY_BROKER_URL", self.broker_url),
            ("CELERY_RESULT_BACKEND", self.result_backend_url),
        ):
            if os.environ.get(name):
                os.environ[name] = value
