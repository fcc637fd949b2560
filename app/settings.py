"""Typed settings of the web process, read once per process and checked before it serves.

``create_app`` refuses to start with settings that would be unsafe in production (no API keys, or
the development key), with a message that says which variable to set.
"""

from functools import cached_property, lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from contract.metrics_access import Network, parse_networks
from storage.settings import DatabaseSettings
from streaming.redis_settings import RedisSettings

#: The key ``make dev`` configures; refused in production.
DEVELOPMENT_API_KEY = "dev-key"
MIN_TOKEN_SECRET_LENGTH = 32


class UnsafeSettingsError(RuntimeError):
    """The settings would expose the service; the message says what to change."""


class WebSettings(RedisSettings, DatabaseSettings):
    """Everything the web process reads from its environment."""

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: uvicorn's lines; json: one JSON object per line.",
    )
    sentry_dsn: SecretStr | None = Field(
        default=None, description="Report unhandled errors (500s) to this Sentry project."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="In production, /metrics answers a request that presents it as a bearer token.",
    )
    metrics_allowed_networks: str = Field(
        default="",
        description="In production, /metrics answers requests from these addresses "
        "(comma-separated networks, e.g. '10.0.0.0/8,127.0.0.1').",
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated key:user_id pairs, e.g. 'k1:alice,k2:bob'.",
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="Signs stream tokens; required in production (at least 32 characters), "
        "the same for every web process.",
    )
    stream_token_ttl: int = Field(
        default=3600, ge=30, le=7 * 86_400, description="Seconds a stream URL's token is valid."
    )
    access_token_ttl: int = Field(
        default=900, ge=30, description="Seconds an access token from /auth/token is valid."
    )
    max_token_ttl: int = Field(
        default=86_400,
        ge=30,
        description="Longest lifetime a client may ask /auth/token for (ttl_seconds).",
    )
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0, le=15.0)
    sse_send_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client may stall a send before it is dropped."
    )
    stream_release_after: float = Field(
        default=2.0,
        gt=0,
        description="Seconds without any stream open after which the relay closes its Redis "
        "connections.",
    )
    http_max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest request head (request line and headers); larger ones get 431.",
    )
    http_header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a request head may take to arrive (from its first byte, or from the "
        "connection's opening); then 408, or the connection closed if nothing came.",
    )
    http_body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request body may take after its head; then 408."
    )
    # The Procfile passes these three to uvicorn, with the same defaults.
    http_keep_alive_timeout: int = Field(
        default=5, ge=1, description="Seconds an idle connection is kept between requests."
    )
    http_max_connections: int = Field(
        default=10_000,
        ge=1,
        description="Connections (streams included) one web process holds; more get 503.",
    )
    http_backlog: int = Field(
        default=2048, ge=1, description="Connections waiting to be accepted (the listen queue)."
    )
    max_active_tasks_per_user: int = Field(
        default=20,
        ge=0,
        description="Tasks one user may have queued, running or retrying at once (0: no cap).",
    )
    max_urgent_tasks_per_user: int = Field(
        default=3,
        ge=0,
        description="Of those, tasks sent with priority 7 or more (0: no cap).",
    )
    max_streams_per_user: int = Field(
        default=20,
        ge=0,
        description="Event streams one user may hold open at once, on all web processes "
        "(0: no cap).",
    )
    max_token_mints_per_minute: int = Field(
        default=30, ge=0, description="Tokens one user may mint in a minute (0: no cap)."
    )
    max_sessions_per_user: int = Field(
        default=1000,
        ge=0,
        description="Sessions one user may hold (idle ones expire; 0: no cap).",
    )
    max_message_bytes: int = Field(default=32 * 1024, ge=1, le=16 * 1024 * 1024)
    max_metadata_bytes: int = Field(default=8 * 1024, ge=2, le=1024 * 1024)

    @field_validator("metrics_allowed_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def metrics_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.metrics_allowed_networks)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body worth parsing: every field at its limit, plus JSON framing.

        A message of N bytes can take up to 6N bytes once JSON-escaped (``\\u0000``).
        """
        return 6 * self.max_message_bytes + 2 * self.max_metadata_bytes + 4096

    def check_safe(self) -> None:
        """Raise ``UnsafeSettingsError`` when production would start without real keys."""
        if self.environment != "production":
            return
        keys = self.api_keys.get_secret_value()
        if not any(pair.strip() for pair in keys.split(",")):
            raise UnsafeSettingsError(
                "API_KEYS is empty: in production every request would be refused. "
                "Set API_KEYS to comma-separated key:user_id pairs."
            )
        if any(pair.split(":", 1)[0].strip() == DEVELOPMENT_API_KEY for pair in keys.split(",")):
            raise UnsafeSettingsError(
                f"API_KEYS contains the development key {DEVELOPMENT_API_KEY!r}; "
                "generate real keys for production."
            )
        secret = self.token_secret.get_secret_value() if self.token_secret else ""
        if len(secret) < MIN_TOKEN_SECRET_LENGTH:
            raise UnsafeSettingsError(
                f"TOKEN_SECRET must be set to at least {MIN_TOKEN_SECRET_LENGTH} random characters "
                "in production (the same on every web process), e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        problem = self.production_problem()
        if problem is not None:
            raise UnsafeSettingsError(problem)


@lru_cache
def get_settings() -> WebSettings:
    """The process's settings, read from the environment (and ``.env``) on first use."""
    return WebSettings()
