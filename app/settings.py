"""Typed settings of the web process, read once per process and checked before it serves.

``create_app`` refuses to start with settings that would be unsafe in production (no API keys, or
the development key), with a message that says which variable to set.
"""

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr

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
    max_message_bytes: int = Field(default=32 * 1024, ge=1, le=16 * 1024 * 1024)
    max_metadata_bytes: int = Field(default=8 * 1024, ge=2, le=1024 * 1024)

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
