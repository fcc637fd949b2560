"""Where Redis is, for every process: the broker, the result backend and the stream transport.

A PaaS hands out one ``REDIS_URL`` (often ``rediss://`` with a self-signed certificate); Celery
deployments name ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``. Both spellings are honoured,
the Celery names winning when both are set. The web and worker settings extend this class so the
two sides can never resolve the same environment to different servers.
"""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
QUEUE_ALLOWANCE_SECONDS = 86_400


def normalise_redis_url(url: str) -> str:
    """Make a ``rediss://`` URL usable by both redis-py and Celery.

    Celery refuses a ``rediss://`` URL without ``ssl_cert_reqs``; redis-py accepts the same query
    parameter. We require certificate checks unless the URL says otherwise.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return url
    query = dict(parse_qsl(parts.query))
    query.setdefault("ssl_cert_reqs", "required")
    return urlunsplit(parts._replace(query=urlencode(query)))


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

    @property
    def redis_url_normalised(self) -> str:
        return normalise_redis_url(self.redis_url)

    @property
    def broker_url(self) -> str:
        return normalise_redis_url(self.celery_broker_url or self.redis_url)

    @property
    def result_backend_url(self) -> str:
        return normalise_redis_url(self.celery_result_backend or self.redis_url)
